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
#include "cio_syscalls.h"

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

// MARK: - VFIO device cdev (/dev/vfio/devices/vfioN)

static const uint8_t CIO_VFIO_TYPE = ';';
static const uint32_t CIO_VFIO_BASE = 100;

// What VFIO_GET_API_VERSION returns (an ioctl result, hence int32_t).
static const int32_t CIO_VFIO_API_VERSION = 0;

static const unsigned long CIO_VFIO_GET_API_VERSION = CIO_IO(100 + 0);
static const unsigned long CIO_VFIO_CHECK_EXTENSION = CIO_IO(100 + 1);
static const unsigned long CIO_VFIO_DEVICE_GET_INFO = CIO_IO(100 + 7);
static const unsigned long CIO_VFIO_DEVICE_GET_REGION_INFO = CIO_IO(100 + 8);
static const unsigned long CIO_VFIO_DEVICE_GET_IRQ_INFO = CIO_IO(100 + 9);
static const unsigned long CIO_VFIO_DEVICE_SET_IRQS = CIO_IO(100 + 10);
static const unsigned long CIO_VFIO_DEVICE_RESET = CIO_IO(100 + 11);
static const unsigned long CIO_VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = CIO_IO(100 + 12);
static const unsigned long CIO_VFIO_DEVICE_PCI_HOT_RESET = CIO_IO(100 + 13);
static const unsigned long CIO_VFIO_DEVICE_FEATURE = CIO_IO(100 + 17);
static const unsigned long CIO_VFIO_DEVICE_BIND_IOMMUFD = CIO_IO(100 + 18);
static const unsigned long CIO_VFIO_DEVICE_ATTACH_IOMMUFD_PT = CIO_IO(100 + 19);
static const unsigned long CIO_VFIO_DEVICE_DETACH_IOMMUFD_PT = CIO_IO(100 + 20);

// Header of every entry in a capability chain; next is a byte offset from the info
// struct's start, 0 at the end of the chain.
struct cio_vfio_info_cap_header {
    uint16_t id;
    uint16_t version;
    uint32_t next;
};

// The VFIO container ioctls, as an iommufd answers them (CONFIG_IOMMUFD_VFIO_CONTAINER).
// Several share their number with a device ioctl: GET_INFO is GET_PCI_HOT_RESET_INFO's
// (100 + 12), MAP_DMA is PCI_HOT_RESET's (100 + 13), DIRTY_PAGES is DEVICE_FEATURE's
// (100 + 17); the descriptor they are issued on tells them apart.
static const unsigned long CIO_VFIO_SET_IOMMU = CIO_IO(100 + 2);
static const unsigned long CIO_VFIO_IOMMU_GET_INFO = CIO_IO(100 + 12);
static const unsigned long CIO_VFIO_IOMMU_MAP_DMA = CIO_IO(100 + 13);
static const unsigned long CIO_VFIO_IOMMU_UNMAP_DMA = CIO_IO(100 + 14);
static const unsigned long CIO_VFIO_IOMMU_DIRTY_PAGES = CIO_IO(100 + 17);

// Extensions (VFIO_CHECK_EXTENSION) and IOMMU types (VFIO_SET_IOMMU): the ioctl's integer
// argument, hence unsigned long.
static const unsigned long CIO_VFIO_TYPE1_IOMMU = 1;
static const unsigned long CIO_VFIO_SPAPR_TCE_IOMMU = 2;
static const unsigned long CIO_VFIO_TYPE1v2_IOMMU = 3;
static const unsigned long CIO_VFIO_DMA_CC_IOMMU = 4;
static const unsigned long CIO_VFIO_EEH = 5;
static const unsigned long CIO___VFIO_RESERVED_TYPE1_NESTING_IOMMU = 6;
static const unsigned long CIO_VFIO_SPAPR_TCE_v2_IOMMU = 7;
static const unsigned long CIO_VFIO_NOIOMMU_IOMMU = 8;
static const unsigned long CIO_VFIO_UNMAP_ALL = 9;
static const unsigned long CIO_VFIO_UPDATE_VADDR = 10;

// cio_vfio_iommu_type1_info.flags.
static const uint32_t CIO_VFIO_IOMMU_INFO_PGSIZES = 1u << 0;
static const uint32_t CIO_VFIO_IOMMU_INFO_CAPS = 1u << 1;

// VFIO_IOMMU_GET_INFO; with INFO_CAPS a capability chain starts at cap_offset (the chain
// follows the struct in a buffer of argsz bytes).
struct cio_vfio_iommu_type1_info {
    uint32_t argsz;
    uint32_t flags;
    cio_aligned_u64 iova_pgsizes;
    uint32_t cap_offset;
    uint32_t pad;
};

// Capability ids of VFIO_IOMMU_GET_INFO (cio_vfio_info_cap_header.id, a 16-bit field).
static const uint16_t CIO_VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
static const uint16_t CIO_VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
static const uint16_t CIO_VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;

// An inclusive IOVA range [start, end]; plain __u64 fields in the kernel's header.
struct cio_vfio_iova_range {
    uint64_t start;
    uint64_t end;
};

// Flexible array: nr_iovas cio_vfio_iova_range follow at offset 16.
struct cio_vfio_iommu_type1_info_cap_iova_range {
    struct cio_vfio_info_cap_header header;
    uint32_t nr_iovas;
    uint32_t reserved;
    struct cio_vfio_iova_range iova_ranges[];
};

// Dirty-page tracking of the type1 driver (an iommufd never reports it).
struct cio_vfio_iommu_type1_info_cap_migration {
    struct cio_vfio_info_cap_header header;
    uint32_t flags;
    uint64_t pgsize_bitmap;
    uint64_t max_dirty_bitmap_size;
};

// How many more DMA mappings the container takes.
struct cio_vfio_iommu_type1_info_dma_avail {
    struct cio_vfio_info_cap_header header;
    uint32_t avail;
};

// cio_vfio_iommu_type1_dma_map.flags.
static const uint32_t CIO_VFIO_DMA_MAP_FLAG_READ = 1u << 0;
static const uint32_t CIO_VFIO_DMA_MAP_FLAG_WRITE = 1u << 1;
static const uint32_t CIO_VFIO_DMA_MAP_FLAG_VADDR = 1u << 2;

// VFIO_IOMMU_MAP_DMA: map [vaddr, vaddr + size) at iova.
struct cio_vfio_iommu_type1_dma_map {
    uint32_t argsz;
    uint32_t flags;
    uint64_t vaddr;
    uint64_t iova;
    uint64_t size;
};

// cio_vfio_iommu_type1_dma_unmap.flags.
static const uint32_t CIO_VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1u << 0;
static const uint32_t CIO_VFIO_DMA_UNMAP_FLAG_ALL = 1u << 1;
static const uint32_t CIO_VFIO_DMA_UNMAP_FLAG_VADDR = 1u << 2;

// VFIO_IOMMU_UNMAP_DMA: size is in/out (bytes unmapped). Flexible array: a struct
// vfio_bitmap follows at offset 24 with GET_DIRTY_BITMAP, which an iommufd refuses.
struct cio_vfio_iommu_type1_dma_unmap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t iova;
    uint64_t size;
    uint8_t data[];
};

// cio_vfio_device_info.flags.
static const uint32_t CIO_VFIO_DEVICE_FLAGS_RESET = 1u << 0;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_PCI = 1u << 1;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_PLATFORM = 1u << 2;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_AMBA = 1u << 3;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_CCW = 1u << 4;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_AP = 1u << 5;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_FSL_MC = 1u << 6;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_CAPS = 1u << 7;
static const uint32_t CIO_VFIO_DEVICE_FLAGS_CDX = 1u << 8;

// VFIO_DEVICE_GET_INFO; with FLAGS_CAPS a capability chain starts at cap_offset.
struct cio_vfio_device_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t num_regions;
    uint32_t num_irqs;
    uint32_t cap_offset;
    uint32_t pad;
};

// Device-info capability ids (cio_vfio_info_cap_header.id, a 16-bit field).
static const uint16_t CIO_VFIO_DEVICE_INFO_CAP_ZPCI_BASE = 1;
static const uint16_t CIO_VFIO_DEVICE_INFO_CAP_ZPCI_GROUP = 2;
static const uint16_t CIO_VFIO_DEVICE_INFO_CAP_ZPCI_UTIL = 3;
static const uint16_t CIO_VFIO_DEVICE_INFO_CAP_ZPCI_PFIP = 4;
static const uint16_t CIO_VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP = 5;

// cio_vfio_device_info_cap_pci_atomic_comp.flags.
static const uint32_t CIO_VFIO_PCI_ATOMIC_COMP32 = 1u << 0;
static const uint32_t CIO_VFIO_PCI_ATOMIC_COMP64 = 1u << 1;
static const uint32_t CIO_VFIO_PCI_ATOMIC_COMP128 = 1u << 2;

// Which PCIe AtomicOp completer sizes the root port supports.
struct cio_vfio_device_info_cap_pci_atomic_comp {
    struct cio_vfio_info_cap_header header;
    uint32_t flags;
    uint32_t reserved;
};

// cio_vfio_region_info.flags.
static const uint32_t CIO_VFIO_REGION_INFO_FLAG_READ = 1u << 0;
static const uint32_t CIO_VFIO_REGION_INFO_FLAG_WRITE = 1u << 1;
static const uint32_t CIO_VFIO_REGION_INFO_FLAG_MMAP = 1u << 2;
static const uint32_t CIO_VFIO_REGION_INFO_FLAG_CAPS = 1u << 3;

// VFIO_DEVICE_GET_REGION_INFO: offset is where the region sits in the device fd.
struct cio_vfio_region_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t cap_offset;
    cio_aligned_u64 size;
    cio_aligned_u64 offset;
};

// Region capability ids (cio_vfio_info_cap_header.id, a 16-bit field).
static const uint16_t CIO_VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
static const uint16_t CIO_VFIO_REGION_INFO_CAP_TYPE = 2;
static const uint16_t CIO_VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;
static const uint16_t CIO_VFIO_REGION_INFO_CAP_NVLINK2_SSATGT = 4;
static const uint16_t CIO_VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD = 5;

// One mmap-able window of a region.
struct cio_vfio_region_sparse_mmap_area {
    cio_aligned_u64 offset;
    cio_aligned_u64 size;
};

// Flexible array: nr_areas cio_vfio_region_sparse_mmap_area follow at offset 16.
struct cio_vfio_region_info_cap_sparse_mmap {
    struct cio_vfio_info_cap_header header;
    uint32_t nr_areas;
    uint32_t reserved;
    struct cio_vfio_region_sparse_mmap_area areas[];
};

// A device-specific region's type and subtype.
struct cio_vfio_region_info_cap_type {
    struct cio_vfio_info_cap_header header;
    uint32_t type;
    uint32_t subtype;
};

// cio_vfio_region_info_cap_type.type values; a PCI vendor type ORs the vendor id into
// the low 16 bits.
static const uint32_t CIO_VFIO_REGION_TYPE_PCI_VENDOR_TYPE = 1u << 31;
static const uint32_t CIO_VFIO_REGION_TYPE_PCI_VENDOR_MASK = 0xffff;
static const uint32_t CIO_VFIO_REGION_TYPE_GFX = 1;
static const uint32_t CIO_VFIO_REGION_TYPE_CCW = 2;
static const uint32_t CIO_VFIO_REGION_TYPE_MIGRATION_DEPRECATED = 3;

// cio_vfio_irq_info.flags.
static const uint32_t CIO_VFIO_IRQ_INFO_EVENTFD = 1u << 0;
static const uint32_t CIO_VFIO_IRQ_INFO_MASKABLE = 1u << 1;
static const uint32_t CIO_VFIO_IRQ_INFO_AUTOMASKED = 1u << 2;
static const uint32_t CIO_VFIO_IRQ_INFO_NORESIZE = 1u << 3;

// VFIO_DEVICE_GET_IRQ_INFO.
struct cio_vfio_irq_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
};

// cio_vfio_irq_set.flags: exactly one DATA_ and one ACTION_ bit.
static const uint32_t CIO_VFIO_IRQ_SET_DATA_NONE = 1u << 0;
static const uint32_t CIO_VFIO_IRQ_SET_DATA_BOOL = 1u << 1;
static const uint32_t CIO_VFIO_IRQ_SET_DATA_EVENTFD = 1u << 2;
static const uint32_t CIO_VFIO_IRQ_SET_ACTION_MASK = 1u << 3;
static const uint32_t CIO_VFIO_IRQ_SET_ACTION_UNMASK = 1u << 4;
static const uint32_t CIO_VFIO_IRQ_SET_ACTION_TRIGGER = 1u << 5;
static const uint32_t CIO_VFIO_IRQ_SET_DATA_TYPE_MASK = 0x7;
static const uint32_t CIO_VFIO_IRQ_SET_ACTION_TYPE_MASK = 0x38;

// VFIO_DEVICE_SET_IRQS. Flexible array: count bools (uint8_t) or eventfds (int32_t)
// follow at offset 20.
struct cio_vfio_irq_set {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t start;
    uint32_t count;
    uint8_t data[];
};

// Region indices of a vfio-pci device (cio_vfio_region_info.index).
static const uint32_t CIO_VFIO_PCI_BAR0_REGION_INDEX = 0;
static const uint32_t CIO_VFIO_PCI_BAR1_REGION_INDEX = 1;
static const uint32_t CIO_VFIO_PCI_BAR2_REGION_INDEX = 2;
static const uint32_t CIO_VFIO_PCI_BAR3_REGION_INDEX = 3;
static const uint32_t CIO_VFIO_PCI_BAR4_REGION_INDEX = 4;
static const uint32_t CIO_VFIO_PCI_BAR5_REGION_INDEX = 5;
static const uint32_t CIO_VFIO_PCI_ROM_REGION_INDEX = 6;
static const uint32_t CIO_VFIO_PCI_CONFIG_REGION_INDEX = 7;
static const uint32_t CIO_VFIO_PCI_VGA_REGION_INDEX = 8;
static const uint32_t CIO_VFIO_PCI_NUM_REGIONS = 9;

// IRQ indices of a vfio-pci device (cio_vfio_irq_info.index, cio_vfio_irq_set.index).
static const uint32_t CIO_VFIO_PCI_INTX_IRQ_INDEX = 0;
static const uint32_t CIO_VFIO_PCI_MSI_IRQ_INDEX = 1;
static const uint32_t CIO_VFIO_PCI_MSIX_IRQ_INDEX = 2;
static const uint32_t CIO_VFIO_PCI_ERR_IRQ_INDEX = 3;
static const uint32_t CIO_VFIO_PCI_REQ_IRQ_INDEX = 4;
static const uint32_t CIO_VFIO_PCI_NUM_IRQS = 5;

// cio_vfio_pci_dependent_device.devid when the hot-reset info was asked with DEV_ID:
// OWNED is a device this iommufd has no id for but owns; NOT_OWNED (-1 in the kernel's
// spelling) one it does not own.
static const uint32_t CIO_VFIO_PCI_DEVID_OWNED = 0;
static const uint32_t CIO_VFIO_PCI_DEVID_NOT_OWNED = 0xffffffffu;

// One device affected by a hot reset: a group id (legacy) or an iommufd device id (cdev).
struct cio_vfio_pci_dependent_device {
    union {
        uint32_t group_id;
        uint32_t devid;
    };
    uint16_t segment;
    uint8_t bus;
    uint8_t devfn;
};

// cio_vfio_pci_hot_reset_info.flags.
static const uint32_t CIO_VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1u << 0;
static const uint32_t CIO_VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1u << 1;

// VFIO_DEVICE_GET_PCI_HOT_RESET_INFO. Flexible array: count
// cio_vfio_pci_dependent_device follow at offset 12.
struct cio_vfio_pci_hot_reset_info {
    uint32_t argsz;
    uint32_t flags;
    uint32_t count;
    struct cio_vfio_pci_dependent_device devices[];
};

// VFIO_DEVICE_PCI_HOT_RESET. Flexible array: count group fds (int32_t) follow at
// offset 12; a cdev caller passes count 0.
struct cio_vfio_pci_hot_reset {
    uint32_t argsz;
    uint32_t flags;
    uint32_t count;
    int32_t group_fds[];
};

// cio_vfio_device_feature.flags: the low 16 bits are the feature index.
static const uint32_t CIO_VFIO_DEVICE_FEATURE_MASK = 0xffff;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_GET = 1u << 16;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_SET = 1u << 17;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_PROBE = 1u << 18;

// Feature indices (the low 16 bits of cio_vfio_device_feature.flags).
static const uint32_t CIO_VFIO_DEVICE_FEATURE_PCI_VF_TOKEN = 0;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_MIGRATION = 1;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_BUS_MASTER = 10;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_DMA_BUF = 11;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2 = 12;
static const uint32_t CIO_VFIO_DEVICE_FEATURE_ZPCI_ERROR = 13;

// VFIO_DEVICE_FEATURE. Flexible array: the feature's payload follows at offset 8.
struct cio_vfio_device_feature {
    uint32_t argsz;
    uint32_t flags;
    uint8_t data[];
};

// cio_vfio_device_bind_iommufd.flags: token_uuid_ptr points at a 16-byte VF token.
static const uint32_t CIO_VFIO_DEVICE_BIND_FLAG_TOKEN = 1u << 0;

// VFIO_DEVICE_BIND_IOMMUFD: bind the device fd to an iommufd; out_devid is its id there.
struct cio_vfio_device_bind_iommufd {
    uint32_t argsz;
    uint32_t flags;
    int32_t iommufd;
    uint32_t out_devid;
    cio_aligned_u64 token_uuid_ptr;
};

// cio_vfio_device_attach_iommufd_pt.flags.
static const uint32_t CIO_VFIO_DEVICE_ATTACH_PASID = 1u << 0;

// VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach to an IOAS or HWPT; pt_id is in/out.
struct cio_vfio_device_attach_iommufd_pt {
    uint32_t argsz;
    uint32_t flags;
    uint32_t pt_id;
    uint32_t pasid;
};

// cio_vfio_device_detach_iommufd_pt.flags.
static const uint32_t CIO_VFIO_DEVICE_DETACH_PASID = 1u << 0;

// VFIO_DEVICE_DETACH_IOMMUFD_PT.
struct cio_vfio_device_detach_iommufd_pt {
    uint32_t argsz;
    uint32_t flags;
    uint32_t pasid;
};

// MARK: - Mock IOMMU (CONFIG_IOMMUFD_TEST)
//
// The kernel's iommufd selftest interface: not a uAPI header and not installed, so these
// declarations are pinned only by the golden tests in Tests/ABITests.

static const unsigned long CIO_IOMMU_TEST_CMD = CIO_IO(0x80 + 32);

// cio_iommu_test_cmd.op values.
static const uint32_t CIO_IOMMU_TEST_OP_ADD_RESERVED = 1;
static const uint32_t CIO_IOMMU_TEST_OP_MOCK_DOMAIN = 2;
static const uint32_t CIO_IOMMU_TEST_OP_MD_CHECK_MAP = 3;
static const uint32_t CIO_IOMMU_TEST_OP_MD_CHECK_REFS = 4;
static const uint32_t CIO_IOMMU_TEST_OP_CREATE_ACCESS = 5;
static const uint32_t CIO_IOMMU_TEST_OP_DESTROY_ACCESS_PAGES = 6;
static const uint32_t CIO_IOMMU_TEST_OP_ACCESS_PAGES = 7;
static const uint32_t CIO_IOMMU_TEST_OP_ACCESS_RW = 8;
static const uint32_t CIO_IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT = 9;
static const uint32_t CIO_IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE = 10;
static const uint32_t CIO_IOMMU_TEST_OP_ACCESS_REPLACE_IOAS = 11;
static const uint32_t CIO_IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS = 12;
static const uint32_t CIO_IOMMU_TEST_OP_DIRTY = 13;
static const uint32_t CIO_IOMMU_TEST_OP_MD_CHECK_IOTLB = 14;
static const uint32_t CIO_IOMMU_TEST_OP_TRIGGER_IOPF = 15;
static const uint32_t CIO_IOMMU_TEST_OP_DEV_CHECK_CACHE = 16;
static const uint32_t CIO_IOMMU_TEST_OP_TRIGGER_VEVENT = 17;
static const uint32_t CIO_IOMMU_TEST_OP_PASID_ATTACH = 18;
static const uint32_t CIO_IOMMU_TEST_OP_PASID_REPLACE = 19;
static const uint32_t CIO_IOMMU_TEST_OP_PASID_DETACH = 20;
static const uint32_t CIO_IOMMU_TEST_OP_PASID_CHECK_HWPT = 21;
static const uint32_t CIO_IOMMU_TEST_OP_DMABUF_GET = 22;
static const uint32_t CIO_IOMMU_TEST_OP_DMABUF_REVOKE = 23;

// cio_iommu_hwpt_selftest.pagetable_type values.
static const uint32_t CIO_MOCK_IOMMUPT_DEFAULT = 0;
static const uint32_t CIO_MOCK_IOMMUPT_HUGE = 1;

// The mock domain's geometry for MOCK_IOMMUPT_DEFAULT (IOVAs and lengths: 64-bit).
static const uint64_t CIO_MOCK_APERTURE_START = 1ull << 24;
static const uint64_t CIO_MOCK_APERTURE_LAST = (1ull << 31) - 1;
static const uint64_t CIO_MOCK_PAGE_SIZE = 2048;
static const uint64_t CIO_MOCK_HUGE_PAGE_SIZE = 512 * 2048;

// access_pages.flags.
static const uint32_t CIO_MOCK_FLAGS_ACCESS_WRITE = 1u << 0;
static const uint32_t CIO_MOCK_FLAGS_ACCESS_SYZ = 1u << 16;
// access_rw.flags.
static const uint32_t CIO_MOCK_ACCESS_RW_WRITE = 1u << 0;
static const uint32_t CIO_MOCK_ACCESS_RW_SLOW_PATH = 1u << 2;
// create_access.flags.
static const uint32_t CIO_MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1u << 0;
// mock_domain_flags.dev_flags.
static const uint32_t CIO_MOCK_FLAGS_DEVICE_NO_DIRTY = 1u << 0;
static const uint32_t CIO_MOCK_FLAGS_DEVICE_PASID = 1u << 2;

// Cache slots of a nested mock domain and of a mock vIOMMU's device.
static const uint32_t CIO_MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3;
static const uint32_t CIO_MOCK_NESTED_DOMAIN_IOTLB_NUM = 4;
static const uint32_t CIO_MOCK_DEV_CACHE_ID_MAX = 3;
static const uint32_t CIO_MOCK_DEV_CACHE_NUM = 4;

// A PASID the selftest keeps for its replace test, and the mock's PASID width in bits.
static const uint32_t CIO_IOMMU_TEST_PASID_RESERVED = 1024;
static const uint32_t CIO_MOCK_PASID_WIDTH = 20;

// Per-op arguments of cio_iommu_test_cmd (named so Swift can build them directly).
struct cio_iommu_test_cmd_add_reserved {
    cio_aligned_u64 start;
    cio_aligned_u64 length;
};
struct cio_iommu_test_cmd_mock_domain {
    uint32_t out_stdev_id;
    uint32_t out_hwpt_id;
    uint32_t out_idev_id;
};
struct cio_iommu_test_cmd_mock_domain_flags {
    uint32_t out_stdev_id;
    uint32_t out_hwpt_id;
    uint32_t out_idev_id;
    uint32_t dev_flags;
};
struct cio_iommu_test_cmd_mock_domain_replace {
    uint32_t pt_id;
};
struct cio_iommu_test_cmd_check_map {
    cio_aligned_u64 iova;
    cio_aligned_u64 length;
    cio_aligned_u64 uptr;
};
struct cio_iommu_test_cmd_check_refs {
    cio_aligned_u64 length;
    cio_aligned_u64 uptr;
    uint32_t refs;
};
struct cio_iommu_test_cmd_create_access {
    uint32_t out_access_fd;
    uint32_t flags;
};
struct cio_iommu_test_cmd_destroy_access_pages {
    uint32_t access_pages_id;
};
struct cio_iommu_test_cmd_access_pages {
    uint32_t flags;
    uint32_t out_access_pages_id;
    cio_aligned_u64 iova;
    cio_aligned_u64 length;
    cio_aligned_u64 uptr;
};
struct cio_iommu_test_cmd_access_rw {
    cio_aligned_u64 iova;
    cio_aligned_u64 length;
    cio_aligned_u64 uptr;
    uint32_t flags;
};
struct cio_iommu_test_cmd_memory_limit {
    uint32_t limit;
};
struct cio_iommu_test_cmd_access_replace_ioas {
    uint32_t ioas_id;
};
struct cio_iommu_test_cmd_dirty {
    uint32_t flags;
    cio_aligned_u64 iova;
    cio_aligned_u64 length;
    cio_aligned_u64 page_size;
    cio_aligned_u64 uptr;
    cio_aligned_u64 out_nr_dirty;
};
struct cio_iommu_test_cmd_check_iotlb {
    uint32_t id;
    uint32_t iotlb;
};
struct cio_iommu_test_cmd_trigger_iopf {
    uint32_t dev_id;
    uint32_t pasid;
    uint32_t grpid;
    uint32_t perm;
    uint64_t addr; // a plain __u64 in the kernel's header: 8-aligned on 64-bit ABIs only
};
struct cio_iommu_test_cmd_check_dev_cache {
    uint32_t id;
    uint32_t cache;
};
struct cio_iommu_test_cmd_trigger_vevent {
    uint32_t dev_id;
};
struct cio_iommu_test_cmd_pasid_attach {
    uint32_t pasid;
    uint32_t pt_id;
};
struct cio_iommu_test_cmd_pasid_replace {
    uint32_t pasid;
    uint32_t pt_id;
};
struct cio_iommu_test_cmd_pasid_detach {
    uint32_t pasid;
};
struct cio_iommu_test_cmd_pasid_check {
    uint32_t pasid;
    uint32_t hwpt_id;
};
struct cio_iommu_test_cmd_dmabuf_get {
    uint32_t length;
    uint32_t open_flags;
};
struct cio_iommu_test_cmd_dmabuf_revoke {
    int32_t dmabuf_fd;
    uint32_t revoked;
};

// IOMMU_TEST_CMD: one mock-IOMMU operation; id names its object (for the PASID ops, the
// mock device's stdev_id). `last` is past the largest union member (dirty, 48 bytes).
struct cio_iommu_test_cmd {
    uint32_t size;
    uint32_t op;
    uint32_t id;
    uint32_t __reserved;
    union {
        struct cio_iommu_test_cmd_add_reserved add_reserved;
        struct cio_iommu_test_cmd_mock_domain mock_domain;
        struct cio_iommu_test_cmd_mock_domain_flags mock_domain_flags;
        struct cio_iommu_test_cmd_mock_domain_replace mock_domain_replace;
        struct cio_iommu_test_cmd_check_map check_map;
        struct cio_iommu_test_cmd_check_refs check_refs;
        struct cio_iommu_test_cmd_create_access create_access;
        struct cio_iommu_test_cmd_destroy_access_pages destroy_access_pages;
        struct cio_iommu_test_cmd_access_pages access_pages;
        struct cio_iommu_test_cmd_access_rw access_rw;
        struct cio_iommu_test_cmd_memory_limit memory_limit;
        struct cio_iommu_test_cmd_access_replace_ioas access_replace_ioas;
        struct cio_iommu_test_cmd_dirty dirty;
        struct cio_iommu_test_cmd_check_iotlb check_iotlb;
        struct cio_iommu_test_cmd_trigger_iopf trigger_iopf;
        struct cio_iommu_test_cmd_check_dev_cache check_dev_cache;
        struct cio_iommu_test_cmd_trigger_vevent trigger_vevent;
        struct cio_iommu_test_cmd_pasid_attach pasid_attach;
        struct cio_iommu_test_cmd_pasid_replace pasid_replace;
        struct cio_iommu_test_cmd_pasid_detach pasid_detach;
        struct cio_iommu_test_cmd_pasid_check pasid_check;
        struct cio_iommu_test_cmd_dmabuf_get dmabuf_get;
        struct cio_iommu_test_cmd_dmabuf_revoke dmabuf_revoke;
    };
    uint32_t last;
};

// GET_HW_INFO answer of the mock IOMMU (type IOMMU_HW_INFO_TYPE_SELFTEST).
static const uint32_t CIO_IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;
static const uint32_t CIO_IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef;

struct cio_iommu_test_hw_info {
    uint32_t flags;
    uint32_t test_reg;
};

// HWPT data for the mock (data_type IOMMU_HWPT_DATA_SELFTEST) and its initial values.
static const uint32_t CIO_IOMMU_HWPT_DATA_SELFTEST = 0xdead;
static const uint32_t CIO_IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef;
static const uint32_t CIO_IOMMU_TEST_DEV_CACHE_DEFAULT = 0xbaddad;

struct cio_iommu_hwpt_selftest {
    uint32_t iotlb;
    uint32_t pagetable_type;
};

// Invalidation of a mock nested HWPT (data_type IOMMU_HWPT_INVALIDATE_DATA_SELFTEST).
static const uint32_t CIO_IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
static const uint32_t CIO_IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
// flags of both selftest invalidation entries: ignore the index, drop everything.
static const uint32_t CIO_IOMMU_TEST_INVALIDATE_FLAG_ALL = 1u << 0;

struct cio_iommu_hwpt_invalidate_selftest {
    uint32_t flags;
    uint32_t iotlb_id;
};

// A mock vIOMMU (type IOMMU_VIOMMU_TYPE_SELFTEST): out_data echoes in_data.
static const uint32_t CIO_IOMMU_VIOMMU_TYPE_SELFTEST = 0xdeadbeef;

struct cio_iommu_viommu_selftest {
    uint32_t in_data;
    uint32_t out_data;
    cio_aligned_u64 out_mmap_offset;
    cio_aligned_u64 out_mmap_length;
};

// Invalidation of a mock vIOMMU's device cache.
static const uint32_t CIO_IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
static const uint32_t CIO_IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;

struct cio_iommu_viommu_invalidate_selftest {
    uint32_t flags;
    uint32_t vdev_id;
    uint32_t cache_id;
};

// vEVENTs of the mock (type IOMMU_VEVENTQ_TYPE_SELFTEST), raised by TRIGGER_VEVENT.
static const uint32_t CIO_IOMMU_VEVENTQ_TYPE_SELFTEST = 0xbeefbeef;

struct cio_iommu_viommu_event_selftest {
    uint32_t virt_id;
};

// Mock HW queues (type IOMMU_HW_QUEUE_TYPE_SELFTEST), at most IOMMU_TEST_HW_QUEUE_MAX.
static const uint32_t CIO_IOMMU_HW_QUEUE_TYPE_SELFTEST = 0xdeadbeef;
static const uint32_t CIO_IOMMU_TEST_HW_QUEUE_MAX = 2;

#endif // __linux__
#endif // CIOMMUFD_SHIM_H
