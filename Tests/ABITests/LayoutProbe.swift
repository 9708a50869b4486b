// Measures where a field of an imported C struct really lies: zero the struct, set the
// field through its key path, and see which bytes hold what was written. This works the same
// for plain fields, fields inside anonymous unions and tuple (C array) elements. A field of an
// anonymous union is reached through a computed property, whose copy of the union need not
// keep padding bytes (under ThreadSanitizer they come back as stack garbage), so the field's
// bytes are those that read 0xff after writing all ones and 0x5a after writing 0x5a5a...:
// padding cannot pass both.

/// The expected place of one field, and where it was found.
struct FieldCheck: Sendable, CustomStringConvertible {
    let path: String
    let expectedOffset: Int
    let expectedWidth: Int
    let foundOffset: Int?
    let foundWidth: Int

    var matches: Bool { foundOffset == expectedOffset && foundWidth == expectedWidth }
    var description: String {
        "\(path): expected offset \(expectedOffset) width \(expectedWidth), "
            + "found offset \(foundOffset.map(String.init) ?? "none") width \(foundWidth)"
    }
}

/// The expected size and alignment of a struct, and its fields.
struct StructCheck: Sendable, CustomStringConvertible {
    let name: String
    let expectedSize: Int
    let expectedAlignment: Int
    let foundSize: Int
    let foundAlignment: Int
    let fields: [FieldCheck]

    var description: String { name }
}

/// One field to look for: its expected offset; its width is the kernel type's width,
/// chosen by the helper (`u8`, `u16`, `u32`, `s32`, `u64`) that made it.
struct Probe<T> {
    let path: String
    let offset: Int
    let width: Int
    /// Writes the field with every byte set to the given one.
    let write: (inout T, UInt8) -> Void
}

private func probe<T, V: FixedWidthInteger>(_ path: WritableKeyPath<T, V>, _ offset: Int) -> Probe<T> {
    Probe(path: "\(path)", offset: offset, width: MemoryLayout<V>.size) { value, byte in
        var pattern = V.zero
        for _ in 0..<MemoryLayout<V>.size { pattern = pattern << 8 | V(truncatingIfNeeded: byte) }
        value[keyPath: path] = pattern
    }
}

// The helpers fix the field's Swift type, so a wrong width or signedness in CIOMMUFD.h
// fails to compile here.
func u8<T>(_ path: WritableKeyPath<T, UInt8>, _ offset: Int) -> Probe<T> { probe(path, offset) }
func u16<T>(_ path: WritableKeyPath<T, UInt16>, _ offset: Int) -> Probe<T> { probe(path, offset) }
func u32<T>(_ path: WritableKeyPath<T, UInt32>, _ offset: Int) -> Probe<T> { probe(path, offset) }
func s32<T>(_ path: WritableKeyPath<T, Int32>, _ offset: Int) -> Probe<T> { probe(path, offset) }
func u64<T>(_ path: WritableKeyPath<T, UInt64>, _ offset: Int) -> Probe<T> { probe(path, offset) }

/// A zero-filled value of a C struct type.
private func zeroed<T>(_: T.Type) -> T {
    let raw = UnsafeMutableRawPointer.allocate(
        byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
    defer { raw.deallocate() }
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.size)
    return raw.load(as: T.self)
}

func layout<T>(_ type: T.Type, size: Int, align: Int, _ probes: [Probe<T>]) -> StructCheck {
    let fields = probes.map { probe -> FieldCheck in
        func written(_ byte: UInt8) -> [UInt8] {
            var value = zeroed(T.self)
            probe.write(&value, byte)
            return withUnsafeBytes(of: &value) { Array($0) }
        }
        let ones = written(0xff), fives = written(0x5a)
        let changed = ones.indices.filter { ones[$0] == 0xff && fives[$0] == 0x5a }
        return FieldCheck(
            path: probe.path, expectedOffset: probe.offset, expectedWidth: probe.width,
            foundOffset: changed.first, foundWidth: changed.count)
    }
    return StructCheck(
        name: "\(T.self)", expectedSize: size, expectedAlignment: align,
        foundSize: MemoryLayout<T>.size, foundAlignment: MemoryLayout<T>.alignment,
        fields: fields)
}
