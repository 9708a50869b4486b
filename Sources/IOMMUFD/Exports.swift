@_exported public import IOMMUAddresses
@_exported public import SystemCalls
