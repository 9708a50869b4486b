// Declarations of the iommufd and VFIO uAPI: written by the ABI work.
