import IOMMUCapabilities
import Testing

/// The three kernel-managed stages: plain (mirror), dirty-tracking, and nest parent.
@Suite struct KernelStages {
    @Test func vtdStages() {
        // Legacy mode (QEMU's default): everything is second stage, 48-bit.
        let legacy = qemuDefaultHost
        #expect(legacy.mirrorStage == KernelManagedStage(
            format: .vtdSecondStage(levels: 4), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 48))
        #expect(legacy.nestParentStage == nil && legacy.dirtyTrackingStage == nil)

        // Scalable with FSTS, SSTS, NEST, SSADS: plain is first stage, dirty and parent second stage.
        let host = vtdNestingHost
        #expect(host.mirrorStage == KernelManagedStage(
            format: .x86_64(levels: 4), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 47,
            signExtended: true))
        let second = KernelManagedStage(
            format: .vtdSecondStage(levels: 4), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 48,
            dirtyTracking: true)
        #expect(host.dirtyTrackingStage == second)
        #expect(host.nestParentStage == second)
        #expect(host.nesting && host.dirtyTracking)

        // A dirty-tracking identity map gets the 48-bit second stage, a plain one the 47-bit first stage.
        var identity = GuestRequirements.noIOMMU(guestPhysicalAddressBits: 48)
        #expect(check(identity, host).plan.strategy == .refuse)
        identity.dirtyTracking = true
        #expect(check(identity, host).plan == .identity)

        // Scalable with FSTS only: no dirty tracking, no parent.
        #expect(qemuScalableHost.nestParentStage == nil && qemuScalableHost.dirtyTrackingStage == nil)
        #expect(qemuScalableHost.mirrorStage.format == .x86_64(levels: 4))
    }

    @Test func smmuStages() {
        let host = smmuHost
        #expect(host.mirrorStage == KernelManagedStage(
            format: .armStage1(granule: .size4K), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 48,
            dirtyTracking: true))
        #expect(host.dirtyTrackingStage == host.mirrorStage)
        #expect(host.nestParentStage == KernelManagedStage(
            format: .armStage2(granule: .size4K), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 48))
        // Stage 2 only: the plain domain is stage 2, without dirty tracking and without nesting.
        let s2 = HostIOMMUCapabilities(smmu: SMMUv3HardwareInfo(idr: [specSMMU[0] & ~0b10, specSMMU[1], 0, 0, 0, specSMMU[5]]))
        #expect(s2.mirrorStage.format == .armStage2(granule: .size4K))
        #expect(!s2.dirtyTracking && s2.nestParentStage == nil && !s2.nesting)
    }

    @Test func amdStages() {
        let v1 = KernelManagedStage(
            format: .amdV1(levels: 5), pageSizes: AMDHardwareInfo(efr: specEFR, efr2: 0x8).hostPageSizes,
            inputAddressBits: 57, dirtyTracking: true)
        #expect(amdHost.mirrorStage == v1 && amdHost.dirtyTrackingStage == v1 && amdHost.nestParentStage == v1)
        let v2 = HostIOMMUCapabilities(amd: AMDHardwareInfo(efr: 1 << 52 | 1 << 48 | 1 << 4 | 3 << 10))
        #expect(v2.mirrorStage == KernelManagedStage(
            format: .x86_64(levels: 4), pageSizes: sizes(.size4K, .size2M, .size1G), inputAddressBits: 47))
        #expect(v2.dirtyTrackingStage == nil && v2.nestParentStage == nil)
        // Neither host translation nor v2 tables: no usable stage.
        #expect(HostIOMMUCapabilities(amd: AMDHardwareInfo(efr: 3 << 10)).mirrorStage == .none)
    }

    @Test func kernelAnswerOverridesDirtyTracking() throws {
        // The kernel says no dirty tracking: no stage keeps it.
        let bytes = le(0, 8) + le(nestingVTd.capability.rawValue, 8) + le(nestingVTd.extendedCapability.rawValue, 8)
        let off = HostIOMMUCapabilities(report: try HardwareInfoReport(type: 1, data: bytes, capabilities: 0, maxPASIDLog2: 20))
        #expect(!off.dirtyTracking && off.nestParentStage?.dirtyTracking == false && !off.mirrorStage.dirtyTracking)
        // The kernel says dirty tracking where the registers have none: the mirror stage gets it.
        let on = HostIOMMUCapabilities(report: try HardwareInfoReport(type: 77, data: [], capabilities: 1, maxPASIDLog2: 0))
        #expect(on.dirtyTracking && on.dirtyTrackingStage == on.mirrorStage && on.mirrorStage.dirtyTracking)
    }
}
