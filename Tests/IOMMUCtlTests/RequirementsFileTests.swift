import IOMMUCapabilities
import IOMMUCtlKit
import Testing

@Suite struct RequirementsFileTests {
    /// The issues `text` produces, as `file:line: message` strings.
    func issues(_ text: String) -> [String] {
        do {
            let parsed = try RequirementsFile.parse(text, file: "guest.conf")
            Issue.record("expected errors, parsed \(parsed.requirements)")
            return []
        } catch {
            return error.issues.map(\.description)
        }
    }

    @Test func aFullFileSetsEveryField() throws {
        let file = try RequirementsFile.parse("""
            # a VT-d guest for a migrating VM
            viommu = intel-vtd
            format = x86-64        # scalable mode, first-stage tables
            levels = 5

            address-bits = 57
            guest-physical-bits = 46
            page-sizes = 4K, 2M
            pasid = 8
            pri = yes
            ats = on
            coherent-walks = true
            nesting = required
            dirty-tracking = 1
            mixing = refuse
            """, file: "guest.conf")
        let r = file.requirements
        #expect(r.viommu == .intelVTd)
        #expect(r.format == .x86_64(levels: 5))
        #expect(r.addressBits == 57)
        #expect(r.mirroredAddressBits == 56)
        #expect(r.guestPhysicalAddressBits == 46)
        #expect(r.pageSizes == PageSizeSet([.size4K, .size2M]))
        #expect(r.pasidBits == 8)
        #expect(r.pri && r.ats && r.coherentWalks && r.dirtyTracking)
        #expect(r.nesting == .required)
        #expect(file.mixing == .refuse)
        #expect(file.lines["levels"] == 4)
        #expect(file.lines["mixing"] == 15)
    }

    @Test func eachVIOMMUTakesItsPresetsDefaults() throws {
        #expect(try RequirementsFile.parse("viommu = intel-vtd").requirements
                == .intelVTdSecondStage(levels: 4, guestPhysicalAddressBits: 39))
        #expect(try RequirementsFile.parse("viommu = arm-smmuv3\ngranule = 16K").requirements == .armSMMUv3(granule: .size16K))
        #expect(try RequirementsFile.parse("viommu = amd").requirements == .amdV2(levels: 4))
        #expect(try RequirementsFile.parse("viommu = virtio").requirements == .virtio())
        #expect(try RequirementsFile.parse("viommu = none\nguest-physical-bits = 40").requirements
                == .noIOMMU(guestPhysicalAddressBits: 40))
        let v1 = try RequirementsFile.parse("viommu = amd\nformat = amd-v1\nlevels = 3").requirements
        #expect(v1.format == .amdV1(levels: 3))
        #expect(v1.addressBits == 39)
        #expect(try RequirementsFile.parse("viommu = intel-vtd").mixing == .separateGroups)
    }

    @Test func unknownKeysSuggestTheClosest() {
        #expect(issues("viommu = intel-vtd\nlevels = 4\npasdi = 8\n")
                == ["guest.conf:3: unknown key 'pasdi' (did you mean 'pasid'?)"])
        #expect(issues("viommu = intel-vtd\nadress-bits = 48")
                == ["guest.conf:2: unknown key 'adress-bits' (did you mean 'address-bits'?)"])
        #expect(issues("viommu = intel-vtd\ncolour = blue") == ["guest.conf:2: unknown key 'colour'"])
    }

    @Test func syntaxErrorsNameTheirLine() {
        #expect(issues("viommu = intel-vtd\n\n  # fine\nlevels 4") == ["guest.conf:4: expected 'key = value', got 'levels 4'"])
        #expect(issues("viommu = intel-vtd\n= 4") == ["guest.conf:2: missing key before '='"])
        #expect(issues("viommu = intel-vtd\npri =   # nothing") == ["guest.conf:2: 'pri' has no value"])
        #expect(issues("viommu = intel-vtd\npri = no\npri = yes") == ["guest.conf:3: 'pri' is already set on line 2"])
    }

    @Test func badValuesNameTheirLine() {
        #expect(issues("viommu = intel-vdt") == ["guest.conf:1: 'viommu' cannot be 'intel-vdt' (did you mean 'intel-vtd'?)"])
        #expect(issues("viommu = vmware")
                == ["guest.conf:1: 'viommu' cannot be 'vmware' (one of none, intel-vtd, arm-smmuv3, amd, virtio)"])
        #expect(issues("viommu = intel-vtd\nlevels = four") == ["guest.conf:2: 'levels' must be a whole number, got 'four'"])
        #expect(issues("viommu = intel-vtd\naddress-bits = 65") == ["guest.conf:2: 'address-bits' must be within 1...64, got 65"])
        #expect(issues("viommu = intel-vtd\npasid = 21") == ["guest.conf:2: 'pasid' must be within 0...20, got 21"])
        #expect(issues("viommu = intel-vtd\nats = maybe") == ["guest.conf:2: 'ats' must be yes or no, got 'maybe'"])
        #expect(issues("viommu = intel-vtd\npage-sizes = 4K, 3M")
                == ["guest.conf:2: '3M' is not a page size (a power of two such as 4K, 2M or 1G)"])
        #expect(issues("viommu = intel-vtd\nnesting = sometimes")
                == ["guest.conf:2: 'nesting' cannot be 'sometimes' (one of required, preferred, forbidden)"])
        #expect(issues("viommu = intel-vtd\nmixing = separate")
                == ["guest.conf:2: 'mixing' cannot be 'separate' (one of separate-groups, refuse)"])
    }

    @Test func combinationsThatDoNotFit() {
        #expect(issues("viommu = intel-vtd\nformat = arm-stage1")
                == ["guest.conf:2: an intel-vtd guest uses vtd-second-stage or x86-64 tables, not arm-stage1"])
        #expect(issues("viommu = arm-smmuv3\nformat = x86-64")
                == ["guest.conf:2: an arm-smmuv3 guest uses arm-stage1 tables, not x86-64"])
        #expect(issues("viommu = intel-vtd\nformat = x86-64\nlevels = 3")
                == ["guest.conf:3: x86-64 tables have 4-5 levels, not 3"])
        #expect(issues("viommu = intel-vtd\ngranule = 64K")
                == ["guest.conf:2: 'granule' does not apply to vtd-second-stage tables (only arm-stage1 has a granule)"])
        #expect(issues("viommu = arm-smmuv3\nlevels = 4")
                == ["guest.conf:2: 'levels' does not apply to arm-stage1 tables (their levels follow the granule and address-bits)"])
        #expect(issues("viommu = virtio\nnesting = required")
                == ["guest.conf:2: 'nesting' does not apply to viommu = virtio (no guest page table)"])
        #expect(issues("viommu = none\nguest-physical-bits = 40\naddress-bits = 40")
                == ["guest.conf:3: 'address-bits' does not apply to viommu = none (devices use guest-physical addresses: set guest-physical-bits)"])
        #expect(issues("# no IOMMU\nviommu = none")
                == ["guest.conf:2: viommu = none needs 'guest-physical-bits' (the width of the addresses devices use)"])
    }

    @Test func aMissingVIOMMUHasNoLineAndEveryProblemIsReported() {
        #expect(issues("levels = 4") == ["guest.conf: missing required key 'viommu' (one of none, intel-vtd, arm-smmuv3, amd, virtio)"])
        #expect(issues("pasdi = 1\nviommu = intel-vtd\nlevels = x\nats = maybe") == [
            "guest.conf:1: unknown key 'pasdi' (did you mean 'pasid'?)",
            "guest.conf:3: 'levels' must be a whole number, got 'x'",
            "guest.conf:4: 'ats' must be yes or no, got 'maybe'",
        ])
    }

    @Test func theREADMETextNamesEveryKey() {
        for key in RequirementsFile.keys { #expect(RequirementsFile.formatDescription.contains("`\(key)`"), "\(key)") }
    }
}
