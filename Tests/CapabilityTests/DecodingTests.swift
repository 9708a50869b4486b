import IOMMUCapabilities
import Testing

/// Little-endian bytes of `value` in `width` bytes.
func le(_ value: UInt64, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) } }

func sizes(_ s: PageSize...) -> PageSizeSet { PageSizeSet(s) }

// The VT-d values read from QEMU 10.0.2's intel-iommu by IOMMU_GET_HW_INFO (notes/hil-recipe.md).
let qemuCap: UInt64 = 0x00d2_008c_222f_0606
let qemuEcap: UInt64 = 0x0000_0000_00f0_0f4a
let qemuScalableCap: UInt64 = 0x01d2_008c_222f_0606
let qemuScalableEcap: UInt64 = 0x0000_8800_00f0_0f4a

@Suite struct VTdDecoding {
    /// cap 0x00d2008c222f0606 by bytes, low to high: 06 06 2f 22 8c 00 d2 00.
    /// byte0 0x06: ND=110b=6, AFL/RWBF/PLMR/PHMR/CM=0. byte1 0x06: SAGAW=00110b (39- and 48-bit).
    /// byte2 0x2f: MGAW=101111b=47 (+1 = 48), ZLR=0. bits 33:24 = 0x022 -> FRO 34*16 = 0x220.
    /// byte4 0x8c=10001100b: SSLPS (37:34)=0011b (2M, 1G), PSI (39)=1. byte5: NFR=0 (+1 = 1).
    /// byte6 0xd2=11010010b: MAMV (53:48)=010010b=18, DWD=1, DRD=1. byte7: FS1GP/PI/FS5LP/... = 0.
    @Test func qemuDefaultCapability() {
        let c = VTdCapability(rawValue: qemuCap)
        #expect(c.numberOfDomainsEncoding == 6)
        #expect(c.domainIDBits == 16)
        #expect(c.domainCount == 65536)
        #expect(!c.advancedFaultLogging && !c.requiresWriteBufferFlush)
        #expect(!c.protectedLowMemoryRegion && !c.protectedHighMemoryRegion)
        #expect(!c.cachingMode)
        #expect(c.secondStageAddressWidths == [.bits39, .bits48])
        #expect(c.secondStageAddressWidths.levels == [3, 4])
        #expect(c.secondStageAddressWidths.widths == [39, 48])
        #expect(c.maximumGuestAddressWidth == 48)
        #expect(!c.zeroLengthRead)
        #expect(c.faultRecordingOffset == 0x220)
        #expect(c.secondStageLargePageSupport == 0b0011)
        #expect(c.pageSelectiveInvalidation)
        #expect(c.faultRecordingRegisterCount == 1)
        #expect(c.maximumAddressMaskValue == 18)
        #expect(c.writeDraining && c.readDraining)
        #expect(!c.firstStage1GPages && !c.postedInterrupts && !c.firstStage5LevelPaging)
        #expect(!c.enhancedCommands && !c.enhancedSetInterruptRemapTablePointer && !c.enhancedSetRootTablePointer)
    }

    /// ecap 0xf00f4a: byte0 0x4a=01001010b: QI, IR, PT set; C, DT, EIM, SC clear.
    /// bits 17:8 = 0x00f -> IRO 15*16 = 0xf0. bits 23:20 = 0xf -> MHMV 15. Everything above is 0.
    @Test func qemuDefaultExtendedCapability() {
        let e = VTdExtendedCapability(rawValue: qemuEcap)
        #expect(!e.coherent && e.queuedInvalidation && !e.deviceTLB && e.interruptRemapping)
        #expect(!e.extendedInterruptMode && e.passThrough && !e.snoopControl)
        #expect(e.iotlbRegisterOffset == 0xf0)
        #expect(e.maximumHandleMaskValue == 15)
        #expect(!e.nested && !e.pageRequests && !e.pasid && e.pasidSizeEncoding == 0)
        #expect(!e.scalableMode && !e.firstStageTranslation && !e.secondStageTranslation)
        #expect(!e.secondStageAccessedDirty)
    }

    @Test func qemuDefaultDerived() {
        let v = VTdHardwareInfo(cap: qemuCap, ecap: qemuEcap)
        #expect(v.secondStagePageSizes == sizes(.size4K, .size2M, .size1G))
        #expect(v.firstStagePageSizes == sizes(.size4K, .size2M))
        #expect(v.secondStageLevels == [3, 4])
        #expect(v.secondStageAddressWidth == 48)
        #expect(v.guestAddressWidth == 48)
        #expect(v.firstStageLevels == [4])
        #expect(v.pasidBits == 0)
        #expect(!v.scalableMode && !v.nestingCapable && !v.dirtyTrackingCapable)

        let caps = HostIOMMUCapabilities(vtd: v)
        #expect(caps.kind == .intelVTd)
        #expect(caps.nestedStages.isEmpty && !caps.nesting)
        #expect(caps.mirrorStage.format == .vtdSecondStage(levels: 4))
        #expect(caps.pageSizes == sizes(.size4K, .size2M, .size1G))
        #expect(caps.inputAddressBits == 48)
        #expect(!caps.ats && !caps.pri && !caps.dirtyTracking && !caps.coherent)
    }

    /// x-scalable-mode=on,x-flts=on: cap adds bit 56 (FS1GP); ecap adds bit 43 (SMTS) and bit 47 (FSTS),
    /// but not SSTS (46) nor NEST (26).
    @Test func qemuScalable() {
        let v = VTdHardwareInfo(cap: qemuScalableCap, ecap: qemuScalableEcap)
        #expect(qemuScalableCap ^ qemuCap == 1 << 56)
        #expect(v.capability.firstStage1GPages)
        #expect(v.capability.maximumGuestAddressWidth == 48)
        #expect(v.extendedCapability.scalableMode)
        #expect(v.extendedCapability.firstStageTranslation)
        #expect(!v.extendedCapability.secondStageTranslation)
        #expect(!v.extendedCapability.nested)
        #expect(v.firstStagePageSizes == sizes(.size4K, .size2M, .size1G))
        #expect(v.scalableMode && !v.nestingCapable && !v.dirtyTrackingCapable)

        let caps = HostIOMMUCapabilities(vtd: v)
        // The first stage is sign-extended: 47 usable bits of its 48.
        #expect(caps.mirrorStage.format == .x86_64(levels: 4) && caps.mirrorStage.signExtended)
        #expect(caps.pageSizes == sizes(.size4K, .size2M, .size1G))
        #expect(caps.inputAddressBits == 47)
        #expect(!caps.nesting)
    }

    /// Setting one documented flag bit alone turns on exactly that property.
    @Test func extendedCapabilityBitsAreDistinct() {
        let flags: [(Int, KeyPath<VTdExtendedCapability, Bool>)] = [
            (0, \.coherent), (1, \.queuedInvalidation), (2, \.deviceTLB), (3, \.interruptRemapping),
            (4, \.extendedInterruptMode), (6, \.passThrough), (7, \.snoopControl), (25, \.memoryTypeSupport),
            (26, \.nested), (29, \.pageRequests), (30, \.executeRequests), (31, \.supervisorRequests),
            (33, \.noWriteFlag), (34, \.extendedAccessedFlag), (40, \.pasid), (41, \.deviceTLBInvalidationThrottle),
            (42, \.pageRequestDrain), (43, \.scalableMode), (44, \.virtualCommands), (45, \.secondStageAccessedDirty),
            (46, \.secondStageTranslation), (47, \.firstStageTranslation), (48, \.scalableModePageWalkCoherency),
            (49, \.ridPASID), (51, \.performanceMonitoring), (52, \.abortDMAMode), (53, \.ridPrivilege),
        ]
        for (n, _) in flags {
            let e = VTdExtendedCapability(rawValue: 1 << UInt64(n))
            let on = flags.filter { e[keyPath: $0.1] }.map(\.0)
            #expect(on == [n], "bit \(n)")
        }
    }

    /// A nesting-capable VT-d: the QEMU scalable registers plus NEST, SSTS, SSADS, SMPWC, PASID with
    /// PSS=19 (20-bit PASIDs), PRS, DT, C, and FS5LP in cap.
    @Test func nestingHost() {
        let v = nestingVTd
        #expect(v.nestingCapable && v.dirtyTrackingCapable)
        #expect(v.pasidBits == 20)
        #expect(v.firstStageLevels == [4, 5])
        let caps = HostIOMMUCapabilities(vtd: v)
        #expect(caps.nestedStages == [
            NestedStageSupport(format: .x86_64(levels: 4), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 48),
            NestedStageSupport(format: .x86_64(levels: 5), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 48),
        ])
        #expect(caps.mirrorStage.format == .x86_64(levels: 4))
        #expect(caps.nestParentStage?.format == .vtdSecondStage(levels: 4))
        #expect(caps.pri && caps.ats && caps.dirtyTracking && caps.coherent && caps.pasidBits == 20)
    }
}

let nestingVTd = VTdHardwareInfo(
    cap: qemuScalableCap | 1 << 60,
    ecap: qemuScalableEcap | 1 << 26 | 1 << 46 | 1 << 45 | 1 << 48 | 1 << 40 | 19 << 35 | 1 << 29 | 1 << 2 | 1 << 0)

@Suite struct RawDecoding {
    /// struct iommu_hw_info_vtd: flags u32, reserved u32, cap u64, ecap u64.
    @Test func vtdFromBytes() throws {
        let bytes = le(1, 4) + le(0, 4) + le(qemuCap, 8) + le(qemuEcap, 8)
        let report = try HardwareInfoReport(type: 1, data: bytes, capabilities: 0x8, maxPASIDLog2: 0)
        #expect(report.info == .intelVTd(VTdHardwareInfo(cap: qemuCap, ecap: qemuEcap, flags: .erratum772415)))
        #expect(report.info.type == .intelVTd)
        #expect(report.capabilities == .atsNotSupported)
        #expect(report.capabilities.description == "[atsNotSupported]")
        let caps = HostIOMMUCapabilities(report: report)
        #expect(!caps.ats && caps.pasidBits == 0 && !caps.dirtyTracking)
    }

    @Test func rawBufferEntryPoint() throws {
        let bytes = le(0, 8) + le(qemuScalableCap, 8) + le(qemuScalableEcap, 8)
        let info = try bytes.withUnsafeBytes { try HardwareInfo(type: 1, data: $0) }
        #expect(info == .intelVTd(VTdHardwareInfo(cap: qemuScalableCap, ecap: qemuScalableEcap)))
    }

    @Test(arguments: [(UInt32(1), 24), (2, 40), (3, 8), (4, 16), (0xfeed_beef, 8)])
    func truncated(type: UInt32, size: Int) {
        for n in [0, size - 1] {
            #expect(throws: HardwareInfoDecodingError.truncated(type: HardwareInfoKind(rawValue: type), expected: size, got: n)) {
                try HardwareInfo(type: type, data: [UInt8](repeating: 0xff, count: n))
            }
        }
        #expect(throws: Never.self) { try HardwareInfo(type: type, data: [UInt8](repeating: 0, count: size)) }
    }

    /// A longer buffer (a newer kernel's structure, or the zeroed tail the kernel writes) decodes
    /// the known prefix and ignores the rest.
    @Test func oversized() throws {
        let bytes = le(0, 8) + le(qemuCap, 8) + le(qemuEcap, 8) + [UInt8](repeating: 0xaa, count: 40)
        #expect(try HardwareInfo(type: 1, data: bytes) == .intelVTd(VTdHardwareInfo(cap: qemuCap, ecap: qemuEcap)))
    }

    @Test func unknownAndNone() throws {
        #expect(try HardwareInfo(type: 0, data: []) == HardwareInfo.none)
        #expect(try HardwareInfo(type: 77, data: [1, 2, 3]) == .unknown(type: 77, bytes: [1, 2, 3]))
        #expect(HardwareInfoKind(rawValue: 77).description == "HardwareInfoKind(0x4d)")
        let caps = HostIOMMUCapabilities(report: try HardwareInfoReport(type: 77, data: [9], capabilities: 1, maxPASIDLog2: 8))
        #expect(caps.kind == .unknown && caps.inputAddressBits == 0 && caps.dirtyTracking && caps.pasidBits == 8)
    }

    @Test func selftestAndTegra() throws {
        let st = try HardwareInfo(type: 0xfeed_beef, data: le(0, 4) + le(0xdead_beef, 4))
        #expect(st == .selftest(SelftestHardwareInfo(flags: 0, testRegister: SelftestHardwareInfo.expectedTestRegister)))
        #expect(HostIOMMUCapabilities(report: HardwareInfoReport(info: st, capabilities: [.dirtyTracking], maxPASIDLog2: 20)).kind == .selftest)

        // flags 0, version 1, log2vcmdqs 7, log2vsids 4, reserved.
        let t = try HardwareInfo(type: 3, data: le(0, 4) + [1, 7, 4, 0])
        guard case .tegra241CMDQV(let cmdqv) = t else { Issue.record("not tegra: \(t)"); return }
        #expect(cmdqv.version == 1 && cmdqv.log2VCMDQs == 7 && cmdqv.log2VSIDs == 4)
        #expect(cmdqv.vcmdqCount == 128 && cmdqv.vsidCount == 16)
    }

    @Test func capabilityDescription() {
        #expect(IOMMUHardwareCapabilities(rawValue: 0x7).description == "[dirtyTracking, pasidExecute, pasidPrivileged]")
        #expect(IOMMUHardwareCapabilities(rawValue: 0x30).description == "[0x30]")
    }
}

/// An SMMUv3 built from the architecture specification's ID register layout.
///
/// IDR0 = 0x094d149b: S2P(0)=1, S1P(1)=1, TTF(3:2)=10b AArch64, COHACC(4)=1, HTTU(7:6)=10b access+dirty,
///   ATS(10)=1, ASID16(12)=1, PRI(16)=1, VMID16(18)=1, CD2L(19)=1, TTENDIAN(22:21)=10b little,
///   STALL_MODEL(25:24)=01b terminate only, ST_LEVEL(28:27)=01b two-level.
/// IDR1 = 0x02730510: SIDSIZE(5:0)=16, SSIDSIZE(10:6)=20, PRIQS(15:11)=0, EVTQS(20:16)=19, CMDQS(25:21)=19.
/// IDR3 = 0x1400: RIL(10)=1, BBML(12:11)=2.
/// IDR5 = 0x00800455: OAS(2:0)=5 (48-bit), GRAN4K(4)=1, GRAN16K(5)=0, GRAN64K(6)=1, DS(7)=0,
///   VAX(11:10)=1 (52-bit), STALL_MAX(31:16)=0x80.
/// IIDR = 0x4830143b: ProductID 0x483, Variant 0, Revision 1, Implementer 0x43b (Arm). AIDR = 0x02: v3.2.
let specSMMU: [UInt32] = [0x094d_149b, 0x0273_0510, 0, 0x1400, 0, 0x0080_0455]

@Suite struct SMMUv3Decoding {
    @Test func fromBytes() throws {
        let bytes = le(0, 4) + le(0, 4) + specSMMU.flatMap { le(UInt64($0), 4) } + le(0x4830_143b, 4) + le(0x02, 4)
        let info = try HardwareInfo(type: 2, data: bytes)
        guard case .armSMMUv3(let s) = info else { Issue.record("not SMMUv3: \(info)"); return }
        #expect(s == SMMUv3HardwareInfo(idr: specSMMU, iidr: 0x4830_143b, aidr: 2))

        #expect(s.idr0.stage1 && s.idr0.stage2)
        #expect(s.idr0.tableFormats == .aarch64)
        #expect(s.idr0.coherentAccess && !s.idr0.broadcastTLBMaintenance)
        #expect(s.idr0.hardwareTableUpdate == .accessAndDirty)
        #expect(s.idr0.ats && s.idr0.pri && s.idr0.asid16 && s.idr0.vmid16 && s.idr0.twoLevelContextDescriptors)
        #expect(!s.idr0.hypervisor && !s.idr0.msi)
        #expect(s.idr0.tableEndianness == .little)
        #expect(s.idr0.stallModel == .terminateOnly)
        #expect(s.idr0.twoLevelStreamTable)
        #expect(s.idr1.streamIDBits == 16 && s.idr1.substreamIDBits == 20)
        #expect(s.idr1.eventQueueLog2 == 19 && s.idr1.commandQueueLog2 == 19 && s.idr1.priQueueLog2 == 0)
        #expect(s.idr3.rangeInvalidation && s.idr3.breakBeforeMakeLevel == 2 && !s.idr3.forcedWriteBack)
        #expect(s.idr5.outputAddressBits == 48)
        #expect(s.idr5.granules == [.size4K, .size64K])
        #expect(s.idr5.virtualAddressExtension == 1 && !s.idr5.largeAddressesSmallGranules)
        #expect(s.idr5.maximumStalls == 0x80)
        #expect(s.iidr.productID == 0x483 && s.iidr.implementer == 0x43b && s.iidr.revision == 1 && s.iidr.variant == 0)
        #expect(s.aidr.description == "3.2")
    }

    @Test func derived() {
        let s = SMMUv3HardwareInfo(idr: specSMMU)
        #expect(s.pageSizes(granule: .size4K) == sizes(.size4K, .size2M, .size1G))
        #expect(s.pageSizes(granule: .size64K) == sizes(.size64K, .size512M))
        #expect(s.pageSizes(granule: .size16K) == [])
        #expect(s.stage1InputBits(granule: .size4K) == 48)
        #expect(s.stage1InputBits(granule: .size64K) == 52)
        #expect(s.nestingCapable && s.dirtyTrackingCapable && s.pasidBits == 20)
        #expect(s.kernelGranule(hostPageSize: .size4K) == .size4K)
        #expect(s.kernelGranule(hostPageSize: .size16K) == .size4K)
        #expect(s.kernelGranule(hostPageSize: .size64K) == .size64K)

        let caps = HostIOMMUCapabilities(smmu: s)
        #expect(caps.kind == .armSMMUv3)
        #expect(caps.nestedStages.map(\.format) == [.armStage1(granule: .size4K), .armStage1(granule: .size64K)])
        #expect(caps.nestedStages.map(\.inputAddressBits) == [48, 52])
        #expect(caps.mirrorStage.format == .armStage1(granule: .size4K))
        #expect(caps.nestParentStage?.format == .armStage2(granule: .size4K))
        #expect(caps.inputAddressBits == 48 && caps.nestParentStage?.inputAddressBits == 48 && caps.outputAddressBits == 48)
        #expect(caps.pri && caps.ats && caps.dirtyTracking && caps.coherent)
    }

    @Test(arguments: [(0, 32), (1, 36), (2, 40), (3, 42), (4, 44), (5, 48), (6, 52)])
    func outputAddressSize(encoding: UInt32, bits: Int) {
        #expect(SMMUv3IDR5(rawValue: encoding).outputAddressBits == bits)
    }

    @Test func reservedOASAndStage1Only() {
        #expect(SMMUv3IDR5(rawValue: 7).outputAddressBits == nil)
        // S1P only, AArch64, 4K granule, OAS 44: no nesting, kernel uses stage 1 with a 48-bit VA.
        let s = SMMUv3HardwareInfo(idr: [0b1010, 0, 0, 0, 0, 0x14])
        let caps = HostIOMMUCapabilities(smmu: s)
        #expect(!caps.nesting)
        #expect(caps.mirrorStage.format == .armStage1(granule: .size4K))
        #expect(caps.inputAddressBits == 48 && caps.outputAddressBits == 44)
    }
}

/// An AMD IOMMU built from the specification's EFR layout.
///
/// EFR = 0x0013_000f_0000_57db: PreFSup(0), PPRSup(1), NXSup(3), GTSup(4), IASup(6), GASup(7), HESup(8),
///   PCSup(9) set (0x3db); HATS(11:10)=01b (5 levels); GATS(13:12)=01b (5 levels); GLX(15:14)=01b;
///   PASmax(36:32)=15 (16-bit PASIDs); GIOSup(48), HASup(49), HDSup(52) set.
/// EFR2 = 0x8: GCR3TRPMode(3).
let specEFR: UInt64 = 0x0013_000f_0000_57db

@Suite struct AMDDecoding {
    @Test func fromBytes() throws {
        let info = try HardwareInfo(type: 4, data: le(specEFR, 8) + le(0x8, 8))
        guard case .amd(let a) = info else { Issue.record("not AMD: \(info)"); return }
        let e = a.efr
        #expect(e.prefetch && e.peripheralPageRequests && !e.x2APIC && e.noExecute && e.guestTranslation)
        #expect(e.invalidateAll && e.guestVirtualAPIC && e.hardwareErrors && e.performanceCounters)
        #expect(e.hostAddressTranslationSize == 1 && e.guestAddressTranslationSize == 1 && e.guestCR3TableLevels == 1)
        #expect(e.pasidMaximum == 15)
        #expect(e.guestIOProtection && e.hostAccess && !e.enhancedPPRHandling && e.hostDirty && !e.secureNestedPaging)
        #expect(a.efr2.gcr3TableRootPointerMode && !a.efr2.sevSNPIO)
        #expect(a.hostLevels == 5 && a.hostAddressBits == 57)
        #expect(a.guestLevels == [4, 5])
        #expect(a.pasidBits == 16)
        #expect(a.nestingCapable && a.dirtyTrackingCapable)
        #expect(a.hostPageSizes.contains(.size4K) && a.hostPageSizes.contains(.size1G))
        #expect(!a.hostPageSizes.contains(PageSize(shift: 39)) && !a.hostPageSizes.contains(PageSize(shift: 57)))
        #expect(a.hostPageSizes.contains(PageSize(shift: 51)) && !a.hostPageSizes.contains(PageSize(shift: 52)))

        let caps = HostIOMMUCapabilities(amd: a)
        #expect(caps.kind == .amd)
        #expect(caps.nestedStages.map(\.format) == [.x86_64(levels: 4), .x86_64(levels: 5)])
        #expect(caps.mirrorStage.format == .amdV1(levels: 5) && caps.nestParentStage?.format == .amdV1(levels: 5))
        #expect(caps.inputAddressBits == 57 && caps.pasidBits == 16 && caps.pri && caps.dirtyTracking)
    }

    /// QEMU 10.0.2's amd-iommu EFR 0x29d3 (notes/hil-recipe.md): 0x29d3 = 0010 1001 1101 0011b:
    /// PreF, PPR, GT, IA, GA, HE set; NX clear; HATS(11:10)=10b (6 levels); GATS(13:12)=10b (reserved).
    @Test func qemuEFR() {
        let a = AMDHardwareInfo(efr: 0x29d3)
        #expect(a.efr.prefetch && a.efr.peripheralPageRequests && a.efr.guestTranslation && !a.efr.noExecute)
        #expect(a.efr.hostAddressTranslationSize == 2 && a.efr.guestAddressTranslationSize == 2)
        #expect(a.hostLevels == 6 && a.hostAddressBits == 64)
        #expect(a.guestLevels == [4])
        #expect(a.pasidBits == 1)
        #expect(!a.nestingCapable)  // no GIOSup, no GCR3TRPMode
    }

    @Test func hostTranslationUnavailable() {
        let a = AMDHardwareInfo(efr: 3 << 10)
        #expect(a.hostLevels == nil && a.hostAddressBits == 0 && a.hostPageSizes == [])
        // Without GTSup and GIOSup there is no v2 table either.
        #expect(HostIOMMUCapabilities(amd: a).mirrorStage == .none)
        // With them the kernel falls back to a 4-level v2 table without sign extension: 47 bits.
        let caps = HostIOMMUCapabilities(amd: AMDHardwareInfo(efr: 3 << 10 | 1 << 4 | 1 << 48))
        #expect(caps.mirrorStage.format == .x86_64(levels: 4) && caps.inputAddressBits == 47)
    }
}
