public import IOMMUFD

/// The VFIO cdev of `address`, or an error that says how to get one.
/// - Throws: ``ToolError`` when the device does not exist, is not bound to vfio-pci (suggesting
///   `iommuctl bind`), or has no cdev (a kernel without `CONFIG_VFIO_DEVICE_CDEV`).
public func vfioCdev(for address: PCIAddress, inventory: SysfsInventory = SysfsInventory()) throws(ToolError) -> String {
    guard let entry = inventory.device(address) else {
        throw ToolError("no PCI device \(address) (\(address.sysfsPath) does not exist)",
                        hints: ["`iommuctl probe` lists the PCI devices"])
    }
    guard entry.driver == "vfio-pci" else {
        throw ToolError("\(address) is not bound to vfio-pci (its driver is \(entry.driver ?? "none"))",
                        hints: ["bind it: `iommuctl bind \(address)` (as root)"])
    }
    guard let name = entry.vfioDevice else {
        throw ToolError("\(address) is bound to vfio-pci but has no VFIO cdev under \(address.sysfsPath)/vfio-dev",
                        hints: ["the kernel needs CONFIG_VFIO_DEVICE_CDEV=y for iommufd's VFIO devices"])
    }
    return "/dev/vfio/devices/" + name
}

/// Every PCI function with a VFIO cdev, in address order.
public func vfioDevices(inventory: SysfsInventory = SysfsInventory()) -> [(address: PCIAddress, cdev: String)] {
    inventory.devices().compactMap { d in
        guard let name = d.vfioDevice, let a = PCIAddress(d.address) else { return nil }
        return (a, "/dev/vfio/devices/" + name)
    }
}

/// Parses a device argument: `DDDD:BB:DD.F` or `BB:DD.F`.
/// - Throws: ``ToolError`` naming the expected form.
public func parseDevice(_ text: String) throws(ToolError) -> PCIAddress {
    guard let a = PCIAddress(text) else {
        throw ToolError("'\(text)' is not a PCI address; expected DDDD:BB:DD.F or BB:DD.F (e.g. 0000:00:05.0)", status: .usage)
    }
    return a
}
