// CIOMMUFD: swift-iommufd's own declarations of the Linux iommufd and VFIO cdev uAPI.
//
// Written from the facts (sizes, offsets, numbers, bits) of linux-libc-dev 7.3.4's
// <linux/iommufd.h> and <linux/vfio.h>, and of the kernel's iommufd selftest header
// (drivers/iommu/iommufd/iommufd_test.h) for the mock IOMMU. Nothing here includes those
// headers, so the module builds against any Linux headers (Debian 12 ships 6.1, which has
// no iommufd.h). CShims/abi_check.c proves every declaration equal to the system's headers
// when they are 7.3 or newer; Tests/ABITests pins the same facts with golden numbers.
//
// Naming: kernel `struct x` is `struct cio_x` with the kernel's field names; kernel constant
// `X` is `CIO_X`, typed like the field it goes into (uint16_t, uint32_t or uint64_t) so Swift
// imports it with that field's type; request numbers are `unsigned long`.
//
// Structs marked "flexible array" end in a `[]` member that Swift does not import: build
// those in a raw buffer of `argsz` bytes, not from the imported MemoryLayout.

#ifndef CIOMMUFD_SHIM_H
#define CIOMMUFD_SHIM_H

#ifdef __linux__

#include <stddef.h>
#include <stdint.h>
#include <linux/ioctl.h>

// A 64-bit field that is 8-aligned on every ABI, as the kernel's __aligned_u64/__aligned_le64.
typedef uint64_t cio_aligned_u64 __attribute__((aligned(8)));

// Request numbers: direction none, size 0, type ';', so they are (';' << 8) | nr.
#define CIO_IO(nr) _IO(';', (nr))

// 1 when abi_check.c compiled its _Static_asserts against the system's uAPI headers.
extern const int cio_abi_checked_against_system_headers;

// MARK: - iommufd (/dev/iommu)

static const uint8_t CIO_IOMMUFD_TYPE = ';';
static const uint32_t CIO_IOMMUFD_CMD_BASE = 0x80;

// Command numbers (the nr of each request).
static const uint32_t CIO_IOMMUFD_CMD_DESTROY = 0x80;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_ALLOC = 0x81;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_COPY = 0x83;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_MAP = 0x85;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_UNMAP = 0x86;
static const uint32_t CIO_IOMMUFD_CMD_OPTION = 0x87;
static const uint32_t CIO_IOMMUFD_CMD_VFIO_IOAS = 0x88;
static const uint32_t CIO_IOMMUFD_CMD_HWPT_ALLOC = 0x89;
static const uint32_t CIO_IOMMUFD_CMD_GET_HW_INFO = 0x8a;
static const uint32_t CIO_IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8b;
static const uint32_t CIO_IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8c;
static const uint32_t CIO_IOMMUFD_CMD_HWPT_INVALIDATE = 0x8d;
static const uint32_t CIO_IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8e;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f;
static const uint32_t CIO_IOMMUFD_CMD_VIOMMU_ALLOC = 0x90;
static const uint32_t CIO_IOMMUFD_CMD_VDEVICE_ALLOC = 0x91;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_CHANGE_PROCESS = 0x92;
static const uint32_t CIO_IOMMUFD_CMD_VEVENTQ_ALLOC = 0x93;
static const uint32_t CIO_IOMMUFD_CMD_HW_QUEUE_ALLOC = 0x94;
static const uint32_t CIO_IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA = 0x95;

static const unsigned long CIO_IOMMU_DESTROY = CIO_IO(0x80);
static const unsigned long CIO_IOMMU_IOAS_ALLOC = CIO_IO(0x81);
static const unsigned long CIO_IOMMU_IOAS_ALLOW_IOVAS = CIO_IO(0x82);
static const unsigned long CIO_IOMMU_IOAS_COPY = CIO_IO(0x83);
static const unsigned long CIO_IOMMU_IOAS_IOVA_RANGES = CIO_IO(0x84);
static const unsigned long CIO_IOMMU_IOAS_MAP = CIO_IO(0x85);
static const unsigned long CIO_IOMMU_IOAS_UNMAP = CIO_IO(0x86);
static const unsigned long CIO_IOMMU_OPTION = CIO_IO(0x87);
static const unsigned long CIO_IOMMU_VFIO_IOAS = CIO_IO(0x88);
static const unsigned long CIO_IOMMU_HWPT_ALLOC = CIO_IO(0x89);
static const unsigned long CIO_IOMMU_GET_HW_INFO = CIO_IO(0x8a);
static const unsigned long CIO_IOMMU_HWPT_SET_DIRTY_TRACKING = CIO_IO(0x8b);
static const unsigned long CIO_IOMMU_HWPT_GET_DIRTY_BITMAP = CIO_IO(0x8c);
static const unsigned long CIO_IOMMU_HWPT_INVALIDATE = CIO_IO(0x8d);
static const unsigned long CIO_IOMMU_FAULT_QUEUE_ALLOC = CIO_IO(0x8e);
static const unsigned long CIO_IOMMU_IOAS_MAP_FILE = CIO_IO(0x8f);
static const unsigned long CIO_IOMMU_VIOMMU_ALLOC = CIO_IO(0x90);
static const unsigned long CIO_IOMMU_VDEVICE_ALLOC = CIO_IO(0x91);
static const unsigned long CIO_IOMMU_IOAS_CHANGE_PROCESS = CIO_IO(0x92);
static const unsigned long CIO_IOMMU_VEVENTQ_ALLOC = CIO_IO(0x93);
static const unsigned long CIO_IOMMU_HW_QUEUE_ALLOC = CIO_IO(0x94);
static const unsigned long CIO_IOMMU_IOAS_NOIOMMU_GET_PA = CIO_IO(0x95);

// IOMMU_DESTROY: drop any object by id.
struct cio_iommu_destroy {
    uint32_t size;
    uint32_t id;
};

// IOMMU_IOAS_ALLOC: a new, empty IO address space.
struct cio_iommu_ioas_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t out_ioas_id;
};

// An inclusive IOVA range [start, last].
struct cio_iommu_iova_range {
    cio_aligned_u64 start;
    cio_aligned_u64 last;
};

// IOMMU_IOAS_IOVA_RANGES: allowed_iovas points at num_iovas cio_iommu_iova_range.
struct cio_iommu_ioas_iova_ranges {
    uint32_t size;
    uint32_t ioas_id;
    uint32_t num_iovas;
    uint32_t __reserved;
    cio_aligned_u64 allowed_iovas;
    cio_aligned_u64 out_iova_alignment;
};

// IOMMU_IOAS_ALLOW_IOVAS: restrict automatic IOVA allocation to the given ranges.
struct cio_iommu_ioas_allow_iovas {
    uint32_t size;
    uint32_t ioas_id;
    uint32_t num_iovas;
    uint32_t __reserved;
    cio_aligned_u64 allowed_iovas;
};

// Flags of IOAS_MAP, IOAS_MAP_FILE and IOAS_COPY.
static const uint32_t CIO_IOMMU_IOAS_MAP_FIXED_IOVA = 1u << 0;
static const uint32_t CIO_IOMMU_IOAS_MAP_WRITEABLE = 1u << 1;
static const uint32_t CIO_IOMMU_IOAS_MAP_READABLE = 1u << 2;

// IOMMU_IOAS_MAP: map user memory [user_va, user_va + length) at iova.
struct cio_iommu_ioas_map {
    uint32_t size;
    uint32_t flags;
    uint32_t ioas_id;
    uint32_t __reserved;
    cio_aligned_u64 user_va;
    cio_aligned_u64 length;
    cio_aligned_u64 iova;
};

// IOMMU_IOAS_NOIOMMU_GET_PA: physical address behind an IOVA (no-IOMMU mode only).
struct cio_iommu_ioas_noiommu_get_pa {
    uint32_t size;
    uint32_t flags;
    uint32_t ioas_id;
    uint32_t __reserved;
    cio_aligned_u64 iova;
    cio_aligned_u64 length;
    cio_aligned_u64 out_phys;
};

// IOMMU_IOAS_MAP_FILE: map [start, start + length) of a memfd or dma-buf fd.
struct cio_iommu_ioas_map_file {
    uint32_t size;
    uint32_t flags;
    uint32_t ioas_id;
    int32_t fd;
    cio_aligned_u64 start;
    cio_aligned_u64 length;
    cio_aligned_u64 iova;
};

// IOMMU_IOAS_COPY: map pages already pinned in one IOAS into another.
struct cio_iommu_ioas_copy {
    uint32_t size;
    uint32_t flags;
    uint32_t dst_ioas_id;
    uint32_t src_ioas_id;
    cio_aligned_u64 length;
    cio_aligned_u64 dst_iova;
    cio_aligned_u64 src_iova;
};

// IOMMU_IOAS_UNMAP: unmap whole areas inside [iova, iova + length); length is in/out.
struct cio_iommu_ioas_unmap {
    uint32_t size;
    uint32_t ioas_id;
    cio_aligned_u64 iova;
    cio_aligned_u64 length;
};

// IOMMU_OPTION: option_id values.
static const uint32_t CIO_IOMMU_OPTION_RLIMIT_MODE = 0;
static const uint32_t CIO_IOMMU_OPTION_HUGE_PAGES = 1;
// IOMMU_OPTION: op values (a 16-bit field).
static const uint16_t CIO_IOMMU_OPTION_OP_SET = 0;
static const uint16_t CIO_IOMMU_OPTION_OP_GET = 1;

struct cio_iommu_option {
    uint32_t size;
    uint32_t option_id;
    uint16_t op;
    uint16_t __reserved;
    uint32_t object_id;
    cio_aligned_u64 val64;
};

// IOMMU_VFIO_IOAS: op values (a 16-bit field) for the legacy VFIO container's IOAS.
static const uint16_t CIO_IOMMU_VFIO_IOAS_GET = 0;
static const uint16_t CIO_IOMMU_VFIO_IOAS_SET = 1;
static const uint16_t CIO_IOMMU_VFIO_IOAS_CLEAR = 2;

struct cio_iommu_vfio_ioas {
    uint32_t size;
    uint32_t ioas_id;
    uint16_t op;
    uint16_t __reserved;
};

// IOMMU_HWPT_ALLOC flags.
static const uint32_t CIO_IOMMU_HWPT_ALLOC_NEST_PARENT = 1u << 0;
static const uint32_t CIO_IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1u << 1;
static const uint32_t CIO_IOMMU_HWPT_FAULT_ID_VALID = 1u << 2;
static const uint32_t CIO_IOMMU_HWPT_ALLOC_PASID = 1u << 3;

// Intel VT-d stage-1 table flags (cio_iommu_hwpt_vtd_s1.flags, a 64-bit field).
static const uint64_t CIO_IOMMU_VTD_S1_SRE = 1ull << 0;
static const uint64_t CIO_IOMMU_VTD_S1_EAFE = 1ull << 1;
static const uint64_t CIO_IOMMU_VTD_S1_WPE = 1ull << 2;

// HWPT data for IOMMU_HWPT_DATA_VTD_S1.
struct cio_iommu_hwpt_vtd_s1 {
    cio_aligned_u64 flags;
    cio_aligned_u64 pgtbl_addr;
    uint32_t addr_width;
    uint32_t __reserved;
};

// HWPT data for IOMMU_HWPT_DATA_ARM_SMMUV3: a guest STE, little-endian.
struct cio_iommu_hwpt_arm_smmuv3 {
    cio_aligned_u64 ste[2];
};

// HWPT data for IOMMU_HWPT_DATA_AMD_GUEST: a guest DTE.
struct cio_iommu_hwpt_amd_guest {
    cio_aligned_u64 dte[4];
};

// cio_iommu_hwpt_alloc.data_type values.
static const uint32_t CIO_IOMMU_HWPT_DATA_NONE = 0;
static const uint32_t CIO_IOMMU_HWPT_DATA_VTD_S1 = 1;
static const uint32_t CIO_IOMMU_HWPT_DATA_ARM_SMMUV3 = 2;
static const uint32_t CIO_IOMMU_HWPT_DATA_AMD_GUEST = 3;

// IOMMU_HWPT_ALLOC: a hardware page table on pt_id (an IOAS or a nesting parent).
struct cio_iommu_hwpt_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t dev_id;
    uint32_t pt_id;
    uint32_t out_hwpt_id;
    uint32_t __reserved;
    uint32_t data_type;
    uint32_t data_len;
    cio_aligned_u64 data_uptr;
    uint32_t fault_id;
    uint32_t __reserved2;
};

static const uint32_t CIO_IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1u << 0;

// hw_info data for IOMMU_HW_INFO_TYPE_INTEL_VTD: raw capability registers.
struct cio_iommu_hw_info_vtd {
    uint32_t flags;
    uint32_t __reserved;
    cio_aligned_u64 cap_reg;
    cio_aligned_u64 ecap_reg;
};

static const uint32_t CIO_IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI = 1u << 0;

// hw_info data for IOMMU_HW_INFO_TYPE_ARM_SMMUV3: raw ID registers.
struct cio_iommu_hw_info_arm_smmuv3 {
    uint32_t flags;
    uint32_t __reserved;
    uint32_t idr[6];
    uint32_t iidr;
    uint32_t aidr;
};

// hw_info data for IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV.
struct cio_iommu_hw_info_tegra241_cmdqv {
    uint32_t flags;
    uint8_t version;
    uint8_t log2vcmdqs;
    uint8_t log2vsids;
    uint8_t __reserved;
};

// hw_info data for IOMMU_HW_INFO_TYPE_AMD: extended feature registers.
struct cio_iommu_hw_info_amd {
    cio_aligned_u64 efr;
    cio_aligned_u64 efr2;
};

// cio_iommu_hw_info.in_data_type / out_data_type values (NONE and DEFAULT are both 0).
static const uint32_t CIO_IOMMU_HW_INFO_TYPE_NONE = 0;
static const uint32_t CIO_IOMMU_HW_INFO_TYPE_DEFAULT = 0;
static const uint32_t CIO_IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
static const uint32_t CIO_IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2;
static const uint32_t CIO_IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV = 3;
static const uint32_t CIO_IOMMU_HW_INFO_TYPE_AMD = 4;

// cio_iommu_hw_info.out_capabilities bits (a 64-bit field).
static const uint64_t CIO_IOMMU_HW_CAP_DIRTY_TRACKING = 1ull << 0;
static const uint64_t CIO_IOMMU_HW_CAP_PCI_PASID_EXEC = 1ull << 1;
static const uint64_t CIO_IOMMU_HW_CAP_PCI_PASID_PRIV = 1ull << 2;
static const uint64_t CIO_IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED = 1ull << 3;

// cio_iommu_hw_info.flags.
static const uint32_t CIO_IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1u << 0;

// IOMMU_GET_HW_INFO: what the IOMMU behind dev_id can do; data is written to data_uptr.
struct cio_iommu_hw_info {
    uint32_t size;
    uint32_t flags;
    uint32_t dev_id;
    uint32_t data_len;
    cio_aligned_u64 data_uptr;
    union {
        uint32_t in_data_type;
        uint32_t out_data_type;
    };
    uint8_t out_max_pasid_log2;
    uint8_t __reserved[3];
    cio_aligned_u64 out_capabilities;
};

static const uint32_t CIO_IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;

// IOMMU_HWPT_SET_DIRTY_TRACKING.
struct cio_iommu_hwpt_set_dirty_tracking {
    uint32_t size;
    uint32_t flags;
    uint32_t hwpt_id;
    uint32_t __reserved;
};

static const uint32_t CIO_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;

// IOMMU_HWPT_GET_DIRTY_BITMAP: one bit per page_size page of [iova, iova + length) at data.
struct cio_iommu_hwpt_get_dirty_bitmap {
    uint32_t size;
    uint32_t hwpt_id;
    uint32_t flags;
    uint32_t __reserved;
    cio_aligned_u64 iova;
    cio_aligned_u64 length;
    cio_aligned_u64 page_size;
    cio_aligned_u64 data;
};

// cio_iommu_hwpt_invalidate.data_type values.
static const uint32_t CIO_IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0;
static const uint32_t CIO_IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1;

static const uint32_t CIO_IOMMU_VTD_INV_FLAGS_LEAF = 1u << 0;

// One VT-d stage-1 invalidation entry.
struct cio_iommu_hwpt_vtd_s1_invalidate {
    cio_aligned_u64 addr;
    cio_aligned_u64 npages;
    uint32_t flags;
    uint32_t __reserved;
};

// One SMMUv3 command-queue entry, little-endian.
struct cio_iommu_viommu_arm_smmuv3_invalidate {
    cio_aligned_u64 cmd[2];
};

// IOMMU_HWPT_INVALIDATE: entry_num entries of entry_len bytes at data_uptr; entry_num is in/out.
struct cio_iommu_hwpt_invalidate {
    uint32_t size;
    uint32_t hwpt_id;
    cio_aligned_u64 data_uptr;
    uint32_t data_type;
    uint32_t entry_len;
    uint32_t entry_num;
    uint32_t __reserved;
};

// cio_iommu_hwpt_pgfault.flags.
static const uint32_t CIO_IOMMU_PGFAULT_FLAGS_PASID_VALID = 1u << 0;
static const uint32_t CIO_IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1u << 1;
// cio_iommu_hwpt_pgfault.perm.
static const uint32_t CIO_IOMMU_PGFAULT_PERM_READ = 1u << 0;
static const uint32_t CIO_IOMMU_PGFAULT_PERM_WRITE = 1u << 1;
static const uint32_t CIO_IOMMU_PGFAULT_PERM_EXEC = 1u << 2;
static const uint32_t CIO_IOMMU_PGFAULT_PERM_PRIV = 1u << 3;

// One I/O page fault, read from the fault queue fd.
struct cio_iommu_hwpt_pgfault {
    uint32_t flags;
    uint32_t dev_id;
    uint32_t pasid;
    uint32_t grpid;
    uint32_t perm;
    uint32_t __reserved;
    cio_aligned_u64 addr;
    uint32_t length;
    uint32_t cookie;
};

// cio_iommu_hwpt_page_response.code values.
static const uint32_t CIO_IOMMUFD_PAGE_RESP_SUCCESS = 0;
static const uint32_t CIO_IOMMUFD_PAGE_RESP_INVALID = 1;

// One page response, written to the fault queue fd.
struct cio_iommu_hwpt_page_response {
    uint32_t cookie;
    uint32_t code;
};

// IOMMU_FAULT_QUEUE_ALLOC.
struct cio_iommu_fault_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t out_fault_id;
    uint32_t out_fault_fd;
};

// cio_iommu_viommu_alloc.type values.
static const uint32_t CIO_IOMMU_VIOMMU_TYPE_DEFAULT = 0;
static const uint32_t CIO_IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1;
static const uint32_t CIO_IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2;

// vIOMMU data for IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: where to mmap the VINTF page.
struct cio_iommu_viommu_tegra241_cmdqv {
    cio_aligned_u64 out_vintf_mmap_offset;
    cio_aligned_u64 out_vintf_mmap_length;
};

// IOMMU_VIOMMU_ALLOC.
struct cio_iommu_viommu_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t type;
    uint32_t dev_id;
    uint32_t hwpt_id;
    uint32_t out_viommu_id;
    uint32_t data_len;
    uint32_t __reserved;
    cio_aligned_u64 data_uptr;
};

// IOMMU_VDEVICE_ALLOC: virt_id is the device's id as the guest sees it.
struct cio_iommu_vdevice_alloc {
    uint32_t size;
    uint32_t viommu_id;
    uint32_t dev_id;
    uint32_t out_vdevice_id;
    cio_aligned_u64 virt_id;
};

// IOMMU_IOAS_CHANGE_PROCESS: move pinned-page accounting to the calling process.
struct cio_iommu_ioas_change_process {
    uint32_t size;
    uint32_t __reserved;
};

// cio_iommufd_vevent_header.flags.
static const uint32_t CIO_IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1u << 0;

// Header of every record read from a vEVENTQ fd.
struct cio_iommufd_vevent_header {
    uint32_t flags;
    uint32_t sequence;
};

// cio_iommu_veventq_alloc.type values.
static const uint32_t CIO_IOMMU_VEVENTQ_TYPE_DEFAULT = 0;
static const uint32_t CIO_IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1;
static const uint32_t CIO_IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2;

// vEVENT for IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: an event-queue entry, little-endian.
struct cio_iommu_vevent_arm_smmuv3 {
    cio_aligned_u64 evt[4];
};

// vEVENT for IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: the LVCMDQ error bitmap, little-endian.
struct cio_iommu_vevent_tegra241_cmdqv {
    cio_aligned_u64 lvcmdq_err_map[2];
};

// IOMMU_VEVENTQ_ALLOC.
struct cio_iommu_veventq_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t viommu_id;
    uint32_t type;
    uint32_t veventq_depth;
    uint32_t out_veventq_id;
    uint32_t out_veventq_fd;
    uint32_t __reserved;
};

// cio_iommu_hw_queue_alloc.type values.
static const uint32_t CIO_IOMMU_HW_QUEUE_TYPE_DEFAULT = 0;
static const uint32_t CIO_IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1;

// IOMMU_HW_QUEUE_ALLOC: a guest queue at nesting_parent_iova the hardware reads directly.
struct cio_iommu_hw_queue_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t viommu_id;
    uint32_t type;
    uint32_t index;
    uint32_t out_hw_queue_id;
    cio_aligned_u64 nesting_parent_iova;
    cio_aligned_u64 length;
};

#endif // __linux__
#endif // CIOMMUFD_SHIM_H
