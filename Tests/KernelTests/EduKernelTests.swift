import Testing

/// Every suite that drives an edu device, one test at a time: a VFIO cdev takes one bind at a
/// time, and suites otherwise run in parallel. `.serialized` applies to the nested suites.
@Suite(.serialized, .enabled(if: KernelTier.enabled, "needs /dev/iommu"))
enum EduKernelTests {}
