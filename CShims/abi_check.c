// Layout checks of CIOMMUFD.h against the system's uAPI headers (filled in below).
#include "CIOMMUFD.h"

#ifdef __linux__
const int cio_abi_checked_against_system_headers = 0;
#endif
