public import IOPageTables

extension PageTableFormatKind {
    /// The `IOPageTables` description of this format, to walk or build tables in it: what a
    /// mirror needs once the planner has picked a format.
    ///
    /// - Parameter outputBits: The output address width to configure; `nil` takes the
    ///   description's default (48 bits for VT-d second stage and Arm, 52 for x86-64 and AMD v1).
    /// - Returns: `nil` for ``selftestMock``, whose table format has no description.
    /// - Throws: ``FormatConfigurationError`` when the kind's levels, granule or `outputBits`
    ///   describe no hardware the format allows.
    public func pageTableFormat(outputBits: Int? = nil) throws(FormatConfigurationError) -> (any PageTableFormat)? {
        switch self {
        case .x86_64(let levels):
            return try X86FirstStage(levels: levels, outputBits: outputBits ?? 52)
        case .vtdSecondStage(let levels):
            return try VTdSecondStage(levels: levels, outputBits: outputBits ?? 48)
        case .armStage1(let granule):
            return try ArmVMSAv8(stage: .stage1, granule: try Self.armGranule(granule), outputBits: outputBits ?? 48)
        case .armStage2(let granule):
            return try ArmVMSAv8(stage: .stage2, granule: try Self.armGranule(granule), outputBits: outputBits ?? 48)
        case .amdV1(let levels):
            return try AMDv1(levels: levels, outputBits: outputBits ?? 52)
        case .selftestMock:
            return nil
        }
    }

    private static func armGranule(_ size: PageSize) throws(FormatConfigurationError) -> ArmVMSAv8.Granule {
        guard let g = ArmVMSAv8.Granule(rawValue: Int(size.shift)) else {
            throw FormatConfigurationError("Arm granules are 4K, 16K or 64K, not \(size)")
        }
        return g
    }
}
