@_exported public import struct SystemPackage.Errno
