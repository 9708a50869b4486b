#include "CIOMMUFD.h"
