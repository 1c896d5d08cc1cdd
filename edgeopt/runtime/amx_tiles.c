/* AMX tile permission, linked into every CPU kernel library (kernels.so) beside the thread pool.

   int8 convs and linear layers built for an Intel CPU with AMX run on its tile registers (edgeopt/lower/amx.py).
   Linux (5.16+) gives a process the tile state only when it asks (arch_prctl ARCH_REQ_XCOMP_PERM; once, for every
   thread); a tile instruction before that dies with SIGILL. So the library asks when it is loaded, on a CPU whose
   CPUID reports AMX-TILE: every loader gets the permission with the library, whichever it is (the Python runtime,
   a language model's other functions, the RPC server, the C++ runner). Asking again, or on a CPU without AMX, is
   harmless. The Python runtime also asks before loading an artifact whose manifest says its kernels use tiles
   ("amx_tiles"), and refuses it with the reason if Linux says no (edgeopt/runtime/amx_permission.py).

   edgeopt_amx_tiles() says what happened: 1 granted, 0 no AMX on this CPU, -errno refused. */
#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int amx_tiles;

__attribute__((constructor)) static void request_amx_tiles(void) {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d >> 24 & 1)) return; /* CPUID.(7,0):EDX[24] AMX-TILE */
  amx_tiles = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 1 : -errno;
}

int edgeopt_amx_tiles(void) { return amx_tiles; }
#endif
