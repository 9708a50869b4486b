import IOMMUCapabilities
import Testing

/// VT-d cap with MGAW `mgaw` (bits 21:16 hold MGAW - 1).
func withMGAW(_ cap: UInt64, _ mgaw: Int) -> UInt64 { (cap & ~(0x3f << 16)) | UInt64(mgaw - 1) << 16 }

/// A nesting VT-d with 57-bit MGAW, 5-level SAGAW and FS5LP.
let wideNestingVTd = VTdHardwareInfo(
    cap: withMGAW(nestingVTd.capability.rawValue, 57) | 1 << 11, ecap: nestingVTd.extendedCapability.rawValue)

/// Findings of the capability review, each checked through the API callers already use
/// (`inputAddressBits`, `pageSizes`, `dirtyTracking`, `check`).
@Suite struct ReviewFindings {
    // 1. The mirror stage is the plain paging domain, not the nest parent.

    @Test func vtdScalableMirrorIsFirstStageLowerHalf() {
        // FSTS in scalable mode: the driver's plain domain is first-stage, sign-extended, 48-bit
        // (MGAW 48, FS5LP unused below MGAW 49): 47 usable bits.
        #expect(vtdNestingHost.inputAddressBits == 47)
        #expect(qemuScalableHost.inputAddressBits == 47)
        // Identity of a 48-bit guest-physical space does not fit that lower half.
        #expect(check(.noIOMMU(guestPhysicalAddressBits: 48), vtdNestingHost).plan
            == .refuse(reasons: [.guestPhysicalAddressWidth(required: 48, offered: 47)]))
        // MGAW 57 with FS5LP: 5-level first stage, 56 usable bits.
        #expect(HostIOMMUCapabilities(vtd: wideNestingVTd).inputAddressBits == 56)
        // QEMU's default (legacy mode) keeps the 48-bit second stage.
        #expect(qemuDefaultHost.inputAddressBits == 48)
    }

    @Test func smmuMirrorIsStage1() {
        // OAS 44: stage 2 (the nest parent) takes 44-bit input, stage 1 (the plain domain) 48.
        let host = HostIOMMUCapabilities(smmu: SMMUv3HardwareInfo(idr: [specSMMU[0], specSMMU[1], 0, specSMMU[3], 0, (specSMMU[5] & ~7) | 4]))
        #expect(host.inputAddressBits == 48)
        #expect(check(.armSMMUv3(addressBits: 48, guestPhysicalAddressBits: 40, nesting: .forbidden), host).plan
            == .softwareMirroring(reason: .nestingForbidden))
        // Nesting still checks the guest-physical space against the 44-bit stage-2 parent.
        #expect(check(.armSMMUv3(addressBits: 48, guestPhysicalAddressBits: 48, nesting: .required), host).plan
            == .refuse(reasons: [.guestPhysicalAddressWidth(required: 48, offered: 44)]))
        // 64 KiB host pages with VAX: the stage-1 domain takes 52-bit input.
        #expect(HostIOMMUCapabilities(smmu: SMMUv3HardwareInfo(idr: specSMMU), hostPageSize: .size64K).inputAddressBits == 52)
    }

    // 2. SMMUv3 dirty tracking: HD and COHACC, stage 1 only.

    @Test func smmuDirtyTrackingNeverNests() {
        var guest = GuestRequirements.armSMMUv3()
        guest.dirtyTracking = true
        let report = check(guest, smmuHost)
        #expect(report.plan == .softwareMirroring(reason: .nestingUnavailable([.dirtyTracking])))
        #expect(report.kernelManagedMismatches == [])
        guest.nesting = .required
        #expect(check(guest, smmuHost).plan == .refuse(reasons: [.dirtyTracking]))
    }

    @Test func smmuDirtyTrackingNeedsCoherentAccess() {
        let s = SMMUv3HardwareInfo(idr: [specSMMU[0] & ~0x10, specSMMU[1], 0, specSMMU[3], 0, specSMMU[5]])
        #expect(!s.dirtyTrackingCapable)
        #expect(!HostIOMMUCapabilities(smmu: s).dirtyTracking)
    }

    // 3. AMD.

    @Test func amdHostPageSizesStopAt51Bits() {
        // 6-level (64-bit) and 5-level (57-bit) v1 tables: 4 KiB ... 2^51, without 512 GiB.
        let six = AMDHardwareInfo(efr: 2 << 10)
        #expect(six.hostPageSizes == PageSizeSet(rawValue: ((1 << 52) - 1) & ~0xfff & ~(1 << 39)))
        let five = AMDHardwareInfo(efr: specEFR, efr2: 0x8)
        #expect(five.hostPageSizes.contains(PageSize(shift: 51)))
        #expect(!five.hostPageSizes.contains(PageSize(shift: 52)) && !five.hostPageSizes.contains(PageSize(shift: 56)))
    }

    @Test func amdDirtyTrackingNeedsHostTranslation() {
        // HDSup, GTSup, GIOSup, but HATS = 3.
        let a = AMDHardwareInfo(efr: 1 << 52 | 1 << 48 | 1 << 4 | 3 << 10)
        #expect(!a.dirtyTrackingCapable)
        #expect(!HostIOMMUCapabilities(amd: a).dirtyTracking)
    }

    @Test func amdV2FallbackWidth() {
        // HATS = 3, GTSup, GIOSup: the v2 (x86-64, not sign-extended) table, 47 bits; 56 with GATS 5-level.
        let four = HostIOMMUCapabilities(amd: AMDHardwareInfo(efr: 1 << 48 | 1 << 4 | 3 << 10))
        #expect(four.inputAddressBits == 47 && four.pageSizes == sizes(.size4K, .size2M, .size1G))
        #expect(HostIOMMUCapabilities(amd: AMDHardwareInfo(efr: 1 << 48 | 1 << 4 | 3 << 10 | 1 << 12)).inputAddressBits == 56)
    }

    // 4. SMMUv3 OAS.

    @Test func smmuReservedOASIs48() {
        let s = SMMUv3HardwareInfo(idr: [specSMMU[0], specSMMU[1], 0, specSMMU[3], 0, specSMMU[5] | 7])
        #expect(s.outputAddressBits == 48)
        let host = HostIOMMUCapabilities(smmu: s)
        #expect(host.outputAddressBits == 48)
        #expect(check(.armSMMUv3(guestPhysicalAddressBits: 44, nesting: .required), host).plan
            == .hardwareNesting(format: .armStage1(granule: .size4K)))
    }

    @Test func smmu52BitOASAdds4TBlocks() {
        let s = SMMUv3HardwareInfo(idr: [specSMMU[0], specSMMU[1], 0, specSMMU[3], 0, (specSMMU[5] & ~7) | 6])
        #expect(s.pageSizes(granule: .size64K) == sizes(.size64K, .size512M, PageSize(shift: 42)))
        #expect(s.pageSizes(granule: .size4K) == sizes(.size4K, .size2M, .size1G))
        #expect(HostIOMMUCapabilities(smmu: s, hostPageSize: .size64K).pageSizes.contains(PageSize(shift: 42)))
        // OAS 48: no 4 TiB block.
        #expect(!HostIOMMUCapabilities(smmu: SMMUv3HardwareInfo(idr: specSMMU), hostPageSize: .size64K).pageSizes
            .contains(PageSize(shift: 42)))
    }

    // 5. VT-d coherency.

    @Test func vtdCoherencyFollowsMode() {
        // Scalable mode with ECAP.C but not SMPWC: not coherent.
        let scalableC = VTdHardwareInfo(cap: qemuScalableCap, ecap: qemuScalableEcap | 1)
        #expect(!HostIOMMUCapabilities(vtd: scalableC).coherent)
        // Scalable mode with SMPWC but not ECAP.C: coherent.
        let scalableSMPWC = VTdHardwareInfo(cap: qemuScalableCap, ecap: qemuScalableEcap | 1 << 48)
        #expect(HostIOMMUCapabilities(vtd: scalableSMPWC).coherent)
        // Legacy mode: ECAP.C.
        #expect(HostIOMMUCapabilities(vtd: VTdHardwareInfo(cap: qemuCap, ecap: qemuEcap | 1)).coherent)
        #expect(!HostIOMMUCapabilities(vtd: VTdHardwareInfo(cap: qemuCap, ecap: qemuEcap | 1 << 48)).coherent)
    }

    // 6. VT-d nested first-stage widths limited by MGAW.

    @Test func vtdNestedWidthLimitedByMGAW() {
        // FS5LP with MGAW 48: the 5-level format takes only 48-bit input.
        #expect(vtdNestingHost.nestedStages.map(\.inputAddressBits) == [48, 48])
        #expect(check(.intelVTdFirstStage(levels: 5, nesting: .required), vtdNestingHost).plan
            == .refuse(reasons: [.nestedAddressWidth(required: 57, offered: 48)]))
        // MGAW 57: 57-bit input, the 5-level guest nests.
        let wide = HostIOMMUCapabilities(vtd: wideNestingVTd)
        #expect(wide.nestedStages.map(\.inputAddressBits) == [48, 57])
        #expect(check(.intelVTdFirstStage(levels: 5), wide).plan == .hardwareNesting(format: .x86_64(levels: 5)))
    }

    // 7. Sign-extended guest tables: only the lower half is mirrored.

    @Test func signExtendedGuestMirrorsLowerHalf() {
        // A legacy-mode host with MGAW 47: a 47-bit zero-extended IOAS.
        let host = HostIOMMUCapabilities(vtd: VTdHardwareInfo(cap: withMGAW(qemuCap, 47), ecap: qemuEcap))
        #expect(host.inputAddressBits == 47)
        // A 4-level VT-d first-stage guest can only use its 47-bit lower half: it fits.
        #expect(GuestRequirements.intelVTdFirstStage(levels: 4).mirroredAddressBits == 47)
        #expect(check(.intelVTdFirstStage(levels: 4, nesting: .forbidden), host).plan
            == .softwareMirroring(reason: .nestingForbidden))
        // Zero-extended guest tables need their full width.
        #expect(check(.intelVTdSecondStage(levels: 4, nesting: .forbidden), host).plan
            == .refuse(reasons: [.addressWidth(required: 48, offered: 47)]))
        #expect(check(.armSMMUv3(addressBits: 48, guestPhysicalAddressBits: 40, nesting: .forbidden), host).plan
            == .refuse(reasons: [.addressWidth(required: 48, offered: 47)]))
        // A 5-level guest's 56-bit lower half still does not fit 48 bits (reported with its 57-bit width).
        #expect(check(.intelVTdFirstStage(levels: 5, nesting: .forbidden), qemuDefaultHost).mismatches
            == [.addressWidth(required: 57, offered: 48)])
    }
}
