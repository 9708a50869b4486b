@_exported public import IOMMUAddresses
@_exported public import struct SystemPackage.Errno
