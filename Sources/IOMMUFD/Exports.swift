@_exported public import IOMMUAddresses
