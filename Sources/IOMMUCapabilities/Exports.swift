@_exported public import IOMMUFD
