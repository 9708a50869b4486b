import IOMMUCapabilities
import Testing

let qemuDefaultHost = HostIOMMUCapabilities(vtd: VTdHardwareInfo(cap: qemuCap, ecap: qemuEcap))
let qemuScalableHost = HostIOMMUCapabilities(vtd: VTdHardwareInfo(cap: qemuScalableCap, ecap: qemuScalableEcap))
let vtdNestingHost = HostIOMMUCapabilities(vtd: nestingVTd)
let smmuHost = HostIOMMUCapabilities(smmu: SMMUv3HardwareInfo(idr: specSMMU))
let amdHost = HostIOMMUCapabilities(amd: AMDHardwareInfo(efr: specEFR, efr2: 0x8))

@Suite struct RequirementCheck {
    @Test func everythingMatchingNests() {
        var guest = GuestRequirements.intelVTdFirstStage(levels: 4, guestPhysicalAddressBits: 46)
        guest.pasidBits = 20
        guest.pri = true
        guest.ats = true
        guest.dirtyTracking = true
        guest.coherentWalks = true
        let report = check(guest, vtdNestingHost)
        #expect(report.plan == .hardwareNesting(format: .x86_64(levels: 4)))
        #expect(report.mismatches.isEmpty)
        // The same guest on an AMD host with nesting: same x86-64 format, other vendor.
        let amd = check(guest, amdHost)
        #expect(amd.nestingMismatches == [.pasidBits(required: 20, offered: 16), .vendorMismatch(guest: .intelVTd, host: .amd)])
        #expect(amd.plan == .refuse(reasons: [.pasidBits(required: 20, offered: 16), .vendorMismatch(guest: .intelVTd, host: .amd)]))
    }

    @Test func smmuGuestOnVTdHostMirrors() {
        let report = check(.armSMMUv3(granule: .size4K), qemuDefaultHost)
        #expect(report.plan == .softwareMirroring(reason: .nestingUnavailable([
            .vendorMismatch(guest: .armSMMUv3, host: .intelVTd), .nestingUnsupported, .coherency,
        ])))
        #expect(report.kernelManagedMismatches == [])
        // 64K-granule SMMUv3 guest: larger guest pages are split into the host's 4K pages.
        #expect(check(.armSMMUv3(granule: .size64K), qemuDefaultHost).plan.strategy == .softwareMirroring)
    }

    @Test func vtdGuestOnHostWithoutNestingFollowsPolicy() {
        let required = check(.intelVTdFirstStage(nesting: .required), qemuScalableHost)
        #expect(required.plan == .refuse(reasons: [.nestingUnsupported]))
        #expect(required.kernelManagedMismatches == nil)
        let preferred = check(.intelVTdFirstStage(nesting: .preferred), qemuScalableHost)
        #expect(preferred.plan == .softwareMirroring(reason: .nestingUnavailable([.nestingUnsupported])))
        let forbidden = check(.intelVTdFirstStage(nesting: .forbidden), vtdNestingHost)
        #expect(forbidden.plan == .softwareMirroring(reason: .nestingForbidden))
        #expect(forbidden.nestingMismatches == nil)
        // A legacy-mode guest (second-stage tables) can never be nested. Its 3-level (39-bit)
        // tables are mirrored in the host's plain first-stage domain.
        let legacy = check(.intelVTdSecondStage(levels: 3), vtdNestingHost)
        #expect(legacy.nestingMismatches == [.pageTableFormatUnsupported(
            required: .vtdSecondStage(levels: 3), offered: [.x86_64(levels: 4), .x86_64(levels: 5)])])
        #expect(legacy.plan.strategy == .softwareMirroring)
        // Its 4-level tables take zero-extended 48-bit IOVAs, wider than that domain's 47-bit lower half.
        let legacy4 = check(.intelVTdSecondStage(levels: 4, nesting: .forbidden), vtdNestingHost)
        #expect(legacy4.plan == .refuse(reasons: [.addressWidth(required: 48, offered: 47)]))
    }

    @Test func wideGuestOnNarrowHostRefuses() {
        let report = check(.intelVTdFirstStage(levels: 5), qemuDefaultHost)
        #expect(report.plan == .refuse(reasons: [.nestingUnsupported, .addressWidth(required: 57, offered: 48)]))
        // With nesting but no FS5LP: the format is missing and the IOAS is too narrow for mirroring.
        var noFS5LP = vtdNestingHost
        noFS5LP.nestedStages.removeAll { $0.format == .x86_64(levels: 5) }
        let r2 = check(.intelVTdFirstStage(levels: 5), noFS5LP)
        #expect(r2.mismatches == [
            .pageTableFormatUnsupported(required: .x86_64(levels: 5), offered: [.x86_64(levels: 4)]),
            .addressWidth(required: 57, offered: 47),
        ])
        if case .refuse = r2.plan {} else { Issue.record("expected refuse, got \(r2.plan)") }
        // The same 5-level guest nests where the host has FS5LP and a 57-bit MGAW.
        #expect(check(.intelVTdFirstStage(levels: 5), HostIOMMUCapabilities(vtd: wideNestingVTd)).plan
            == .hardwareNesting(format: .x86_64(levels: 5)))
    }

    @Test func dirtyTrackingCannotBeEmulated() {
        var guest = GuestRequirements.intelVTdFirstStage()
        guest.dirtyTracking = true
        let report = check(guest, qemuScalableHost)
        #expect(report.nestingMismatches == [.dirtyTracking, .nestingUnsupported])
        #expect(report.kernelManagedMismatches == [.dirtyTracking])
        #expect(report.plan == .refuse(reasons: [.dirtyTracking, .nestingUnsupported]))
    }

    @Test func deviceFeaturesAreReportedWithValues() {
        var guest = GuestRequirements.virtio()
        guest.pasidBits = 8
        guest.pri = true
        guest.ats = true
        let report = check(guest, qemuDefaultHost)
        #expect(report.plan == .refuse(reasons: [.pasidBits(required: 8, offered: 0), .pri, .ats]))
        #expect(check(.virtio(), qemuDefaultHost).plan == .softwareMirroring(reason: .requestBasedIOMMU))
    }

    @Test func nestedStageLimits() {
        // SMMUv3 guest with 16K granule on an SMMUv3 host without GRAN16K.
        let r16 = check(.armSMMUv3(granule: .size16K), smmuHost)
        #expect(r16.nestingMismatches == [.pageTableFormatUnsupported(
            required: .armStage1(granule: .size16K), offered: [.armStage1(granule: .size4K), .armStage1(granule: .size64K)])])
        #expect(r16.plan.strategy == .softwareMirroring)
        // 52-bit VA with 64K granule nests (VAX); on the 4K granule it does not.
        let r64 = check(.armSMMUv3(granule: .size64K, addressBits: 52), smmuHost)
        #expect(r64.nestingMismatches == [])
        #expect(r64.plan == .hardwareNesting(format: .armStage1(granule: .size64K)))
        let r4 = check(.armSMMUv3(granule: .size4K, addressBits: 52), smmuHost)
        #expect(r4.nestingMismatches == [.nestedAddressWidth(required: 52, offered: 48)])
        #expect(r4.kernelManagedMismatches == [.addressWidth(required: 52, offered: 48)])
        // A guest page size the nested stage lacks.
        var odd = GuestRequirements.armSMMUv3(granule: .size4K)
        odd.pageSizes.formUnion(PageSizeSet([PageSize(shift: 39)]))
        #expect(check(odd, smmuHost).nestingMismatches == [.nestedPageSizes(
            required: odd.pageSizes, offered: PageSizeSet([.size4K, .size2M, .size1G]))])
        // Guest-physical space wider than the nesting parent.
        #expect(check(.armSMMUv3(guestPhysicalAddressBits: 52), smmuHost).nestingMismatches
            == [.guestPhysicalAddressWidth(required: 52, offered: 48)])
    }

    @Test func hostPageLargerThanGuestPage() {
        // An SMMUv3 with only the 64K granule serving a 4K guest.
        let host = HostIOMMUCapabilities(smmu: SMMUv3HardwareInfo(idr: [0b1010, 0, 0, 0, 0, 0x45]))
        #expect(host.pageSizes == PageSizeSet([.size64K, .size512M]))
        let report = check(.armSMMUv3(granule: .size4K, nesting: .forbidden), host)
        #expect(report.plan == .refuse(reasons: [.pageGranule(required: .size4K, offered: .size64K)]))
    }

    @Test func noIOMMUIsIdentity() {
        #expect(check(.noIOMMU(guestPhysicalAddressBits: 46), qemuDefaultHost).plan == .identity)
        #expect(check(.noIOMMU(guestPhysicalAddressBits: 52), qemuDefaultHost).plan
            == .refuse(reasons: [.guestPhysicalAddressWidth(required: 52, offered: 48)]))
    }

    @Test func inconsistentRequirementsRefuse() {
        var guest = GuestRequirements.armSMMUv3()
        guest.format = .x86_64(levels: 4)
        guard case .refuse(let reasons) = check(guest, smmuHost).plan else { Issue.record("not refused"); return }
        #expect(reasons.count == 1)
        if case .invalidRequirements = reasons.first {} else { Issue.record("wrong reason \(reasons)") }
        #expect(GuestRequirements.virtio().inconsistencies.isEmpty)
        var required = GuestRequirements.virtio()
        required.nesting = .required
        #expect(!required.inconsistencies.isEmpty)
    }

    @Test func reportFromKernelAnswerOverridesRegisters() throws {
        // The nesting VT-d's registers, but the kernel says: no dirty tracking, no ATS, 10-bit PASIDs.
        let bytes = le(0, 8) + le(nestingVTd.capability.rawValue, 8) + le(nestingVTd.extendedCapability.rawValue, 8)
        let report = try HardwareInfoReport(type: 1, data: bytes, capabilities: 0x8, maxPASIDLog2: 10)
        let host = HostIOMMUCapabilities(report: report)
        #expect(host.nesting && !host.dirtyTracking && !host.ats && host.pasidBits == 10)
        var guest = GuestRequirements.intelVTdFirstStage()
        guest.ats = true
        guest.dirtyTracking = true
        #expect(check(guest, host).plan == .refuse(reasons: [.ats, .dirtyTracking]))
    }
}

@Suite struct MultiDevicePlanning {
    @Test func differentHostGetsSeparateGroup() {
        var planner = DevicePlanner(requirements: .intelVTdFirstStage(), mixing: .separateGroups)
        #expect(planner.add(device: "nic0", host: vtdNestingHost) == .newGroup(group: 0, differences: []))
        #expect(planner.add(device: "nic1", host: vtdNestingHost) == .joined(group: 0))
        // Same vendor, no nesting: mirroring in its own IOAS.
        let third = planner.add(device: "gpu0", host: qemuScalableHost)
        guard case .newGroup(1, let diffs) = third else { Issue.record("got \(third)"); return }
        #expect(diffs.contains(.strategy(first: .hardwareNesting, device: .softwareMirroring)))
        #expect(diffs.contains(.pasidBits(first: 20, device: 0)))
        #expect(!diffs.contains { if case .kind = $0 { true } else { false } })
        #expect(planner.add(device: "gpu1", host: qemuScalableHost) == .joined(group: 1))
        // Another vendor: mirroring too, but a different kind and IOVA width: a third group.
        let fifth = planner.add(device: "ssd0", host: amdHost)
        guard case .newGroup(2, let d5) = fifth else { Issue.record("got \(fifth)"); return }
        #expect(d5.first == .kind(first: .intelVTd, device: .amd))
        #expect(d5.contains(.inputAddressBits(first: 47, device: 57)))
        #expect(planner.groups.map(\.devices) == [["nic0", "nic1"], ["gpu0", "gpu1"], ["ssd0"]])
        #expect(planner.groups.map(\.plan.strategy) == [.hardwareNesting, .softwareMirroring, .softwareMirroring])
    }

    @Test func differentHostRefusedUnderStrictPolicy() {
        var planner = DevicePlanner(requirements: .armSMMUv3(), mixing: .refuse)
        #expect(planner.add(device: "a", host: smmuHost) == .newGroup(group: 0, differences: []))
        let b = planner.add(device: "b", host: qemuDefaultHost)
        guard case .refusedDifferentHost(let diffs) = b else { Issue.record("got \(b)"); return }
        #expect(diffs.first == .kind(first: .armSMMUv3, device: .intelVTd))
        #expect(planner.groups.count == 1 && planner.groups[0].devices == ["a"])
    }

    @Test func refusedDeviceJoinsNothing() {
        var guest = GuestRequirements.intelVTdFirstStage()
        guest.dirtyTracking = true
        var planner = DevicePlanner(requirements: guest)
        #expect(planner.add(device: "old", host: qemuDefaultHost)
            == .refused(reasons: [.dirtyTracking, .nestingUnsupported]))
        #expect(planner.groups.isEmpty)
        // The first accepted device defines group 0.
        #expect(planner.add(device: "new", host: vtdNestingHost) == .newGroup(group: 0, differences: []))
    }
}
