/* edgeopt's thread pool for the parallel loops of a CPU kernel library (kernels.so).

   Linked into every CPU artifact's kernels.so. The runtime (Python and the C++ runner) calls the library's
   `edgeopt_thread_pool` function once after loading it; that points the library's `__TVMBackendParallelLaunch`
   (the hook TVM's generated code launches its parallel loops through) at `edgeopt_parallel_launch` below,
   instead of TVM's own pool.

   Why not TVM's pool: it splits every parallel loop into one fixed slice per thread and, between slices, waits by
   calling sched_yield. A yielding thread hands its core to any other runnable process, even one at nice 19, and
   one slice whose thread lost its core holds up the whole kernel: with a busy process beside it, a 4.6 ms int8
   ResNet-18 took 8 ms (that process at nice 19) to 100 ms (on one of the two cores). See docs/design.md,
   "Lowering and runtime", and bench/contention.py.

   What this pool does instead:
   - a loop runs as `TASKS_PER_THREAD` tasks per thread, and threads claim tasks one at a time from a shared
     counter: a thread that lost its core delays only the task it holds, and the others take the rest;
   - a waiting thread spins on the CPU's pause instruction (it keeps its core) for up to SPIN_NS, then sleeps on a
     condition variable; a worker idle for IDLE_EXIT_MS exits (a library loaded and forgotten holds no thread);
   - one launch at a time: a launch from a second thread, or from inside a task, runs its tasks on the caller;
   - the library's destructor (dlclose, process exit) stops and joins the workers; a forked child starts afresh;
   - workers start with the launching thread's CPU affinity (a caller pinned to some cores keeps the pool there).

   Threads: TVM_NUM_THREADS (the runtime sets it to the cores this process may run on), the caller included.

   Contract with TVM's generated code (tvm/runtime/c_backend_api.h): `flambda(task_id, env, cdata)` for every
   task_id in [0, env->num_task), each once, in any order and on any thread; a non-zero return fails the launch.
   It never calls TVMBackendParallelBarrier (tasks may not run at the same time): a library that references it
   keeps TVM's pool (`edgeopt_thread_pool` returns 0). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* glibc 2.34 moved the pthread functions into libc under new symbol versions; a library linked against them would
   not load on an older glibc (Ubuntu 20.04, JetPack 5), which kernels.so did before it carried this pool. Bind the
   versions those functions have had since the architecture's first glibc (both still export them). */
#if defined(__GLIBC__) && defined(__x86_64__)
#define EDGEOPT_V(x86, arm) x86
#elif defined(__GLIBC__) && defined(__aarch64__)
#define EDGEOPT_V(x86, arm) arm
#endif
#ifdef EDGEOPT_V
#define EDGEOPT_GLIBC_BASE(f, v) __asm__(".symver " #f "," #f "@GLIBC_" v);
EDGEOPT_GLIBC_BASE(pthread_create, EDGEOPT_V("2.2.5", "2.17"))
EDGEOPT_GLIBC_BASE(pthread_join, EDGEOPT_V("2.2.5", "2.17"))
EDGEOPT_GLIBC_BASE(pthread_mutex_trylock, EDGEOPT_V("2.2.5", "2.17"))
EDGEOPT_GLIBC_BASE(pthread_setname_np, EDGEOPT_V("2.12", "2.17"))
EDGEOPT_GLIBC_BASE(pthread_condattr_setclock, EDGEOPT_V("2.3.3", "2.17"))
EDGEOPT_GLIBC_BASE(pthread_condattr_init, EDGEOPT_V("2.2.5", "2.17"))
EDGEOPT_GLIBC_BASE(pthread_condattr_destroy, EDGEOPT_V("2.2.5", "2.17"))
#endif

typedef struct { void* sync_handle; int32_t num_task; } TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);
typedef struct { int32_t type_index; int32_t zero_padding; int64_t v_int64; } TVMFFIAny;  /* tvm/ffi/c_api.h */

/* defined by TVM's generated code when the library has parallel loops / barriers; weak: may be absent */
extern void* __TVMBackendParallelLaunch __attribute__((weak));
extern void* __TVMBackendParallelBarrier __attribute__((weak));
/* libtvm_ffi, loaded by the runtime before the library */
extern void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message) __attribute__((weak));

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() ((void)0)
#endif

#ifndef EDGEOPT_POOL_IDLE_EXIT_MS  /* (the tests build the pool with their own values of these two) */
#define EDGEOPT_POOL_IDLE_EXIT_MS 2000
#endif
#ifndef EDGEOPT_POOL_THREAD_NAME
#define EDGEOPT_POOL_THREAD_NAME "edgeopt-pool"
#endif

enum { MAX_THREADS = 256, TASKS_PER_THREAD = 4 };
static const long SPIN_NS = 1000000L;   /* 1 ms: covers the gap between a model's kernels and between calls */
static const long IDLE_EXIT_MS = EDGEOPT_POOL_IDLE_EXIT_MS;
enum { NONE = 0, RUNNING = 1, EXITED = 2 };  /* a worker's state; EXITED: returned, not yet joined */

static pthread_mutex_t launch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sleep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int nthreads;
static int configured;  /* nthreads is read (at the first launch; again in a forked child, which has no workers) */
static pthread_t tid[MAX_THREADS];
static _Atomic int state[MAX_THREADS];
static uint32_t start_generation[MAX_THREADS];  /* the launch a new worker counts as seen: the one before its first */
/* the current launch: its generation (high 32 bits) and the next unclaimed task (low 32 bits). A task is
   claimed by a compare-and-swap on both, so a thread late from an earlier launch can never claim one. */
static _Alignas(64) _Atomic uint64_t ticket;  /* each counter every thread writes on a cache line of its own */
static _Alignas(64) _Atomic int finished;     /* tasks done: each thread adds its count once it has no more */
static _Alignas(64) _Atomic(FTVMParallelLambda) job_f;  /* written before the generation is published */
static _Atomic(void*) job_cdata;
static _Atomic int job_tasks, sleeping, stop;
static _Atomic int failed;  /* bit 0: a task failed on a worker; bit 1: on the launching thread (its error is set) */
static _Thread_local int in_pool;  /* set on workers and on a launching thread: a nested launch runs inline */

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static uint32_t generation(void) { return (uint32_t)(atomic_load_explicit(&ticket, memory_order_acquire) >> 32); }

/* Claim and run tasks of launch `gen` until none is left (or a newer launch has begun). */
static void run_tasks(uint32_t gen, int launcher) {
  int done = 0;
  for (;;) {
    uint64_t t = atomic_load_explicit(&ticket, memory_order_acquire);
    if ((uint32_t)(t >> 32) != gen) break;
    FTVMParallelLambda f = atomic_load_explicit(&job_f, memory_order_relaxed);
    void* cdata = atomic_load_explicit(&job_cdata, memory_order_relaxed);
    int n = atomic_load_explicit(&job_tasks, memory_order_relaxed);
    int task = (int)(uint32_t)t;
    if (task >= n) break;
    if (!atomic_compare_exchange_weak_explicit(&ticket, &t, t + 1, memory_order_acq_rel, memory_order_relaxed))
      continue;  /* claimed by another thread (the fields read above may be a newer launch's: unused) */
    TVMParallelGroupEnv env = {NULL, n};
    if (f(task, &env, cdata) != 0) atomic_fetch_or(&failed, launcher ? 2 : 1);
    ++done;
  }
  if (done) atomic_fetch_add_explicit(&finished, done, memory_order_release);
}

/* Wait for a launch newer than `seen`: spin, then sleep. Returns 0 when the worker should exit. */
static int wait_for_launch(uint32_t seen, int me) {
  long start = now_ns();
  for (unsigned k = 1; generation() == seen && !atomic_load(&stop); ++k) {
    CPU_RELAX();
    if (k % 256 == 0 && now_ns() - start > SPIN_NS) break;
  }
  if (generation() != seen) return 1;
  pthread_mutex_lock(&sleep_mu);
  atomic_fetch_add(&sleeping, 1);  /* before re-reading the generation: a launch either sees it or is seen */
  atomic_thread_fence(memory_order_seq_cst);
  int timed_out = 0;
  while (generation() == seen && !atomic_load(&stop) && !timed_out) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);  /* `wake` waits on the monotonic clock (init_sync) */
    deadline.tv_sec += IDLE_EXIT_MS / 1000;
    deadline.tv_nsec += (IDLE_EXIT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    timed_out = pthread_cond_timedwait(&wake, &sleep_mu, &deadline) == ETIMEDOUT;
  }
  atomic_fetch_sub(&sleeping, 1);
  int go_on = !atomic_load(&stop) && generation() != seen;
  if (!go_on) atomic_store(&state[me], EXITED);  /* under sleep_mu: a launch that follows sees it and restarts it */
  pthread_mutex_unlock(&sleep_mu);
  return go_on;
}

static void* worker(void* arg) {
  int me = (int)(intptr_t)arg;
  uint32_t seen = start_generation[me];
  in_pool = 1;
  while (wait_for_launch(seen, me)) {
    seen = generation();
    run_tasks(seen, 0);
  }
  return NULL;
}

static int configured_threads(void) {
  const char* v = getenv("TVM_NUM_THREADS");
  int n = v ? atoi(v) : 0;
  if (n <= 0) {
    cpu_set_t cpus;
    n = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
  }
  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
}

static void init_sync(void) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&wake, &attr);
  pthread_condattr_destroy(&attr);
}

/* In a forked child: none of the parent's workers exist, and a lock a parent thread held stays held. */
static void after_fork_in_child(void) {
  pthread_mutex_init(&launch_mu, NULL);
  pthread_mutex_init(&sleep_mu, NULL);
  init_sync();
  for (int i = 0; i < MAX_THREADS; ++i) atomic_store(&state[i], NONE);
  atomic_store(&sleeping, 0);
  configured = 0;
}

__attribute__((constructor)) static void init_pool(void) {
  init_sync();
  pthread_atfork(NULL, NULL, after_fork_in_child);  /* unregistered when the library is unloaded (glibc) */
}

/* (Re)start the workers that are not running; called holding launch_mu, before the launch is published. */
static void start_workers(void) {
  if (!configured) {
    nthreads = configured_threads();
    configured = 1;
  }
  for (int i = 1; i < nthreads; ++i) {
    int s = atomic_load(&state[i]);
    if (s == RUNNING) continue;
    if (s == EXITED) pthread_join(tid[i], NULL);
    start_generation[i] = generation();
    atomic_store(&state[i], RUNNING);
    if (pthread_create(&tid[i], NULL, worker, (void*)(intptr_t)i) != 0)
      atomic_store(&state[i], NONE);
    else
      pthread_setname_np(tid[i], EDGEOPT_POOL_THREAD_NAME);  /* here, not in the worker: named when this returns */
  }
}

static int run_inline(FTVMParallelLambda f, void* cdata, int num_task) {
  int n = num_task > 0 ? num_task : 1;
  TVMParallelGroupEnv env = {NULL, n};
  for (int i = 0; i < n; ++i)
    if (f(i, &env, cdata) != 0) return -1;
  return 0;
}

static int edgeopt_parallel_launch(FTVMParallelLambda f, void* cdata, int num_task) {
  if (in_pool || pthread_mutex_trylock(&launch_mu) != 0) return run_inline(f, cdata, num_task);
  if (atomic_load(&stop)) {  /* after the destructor (a thread still running at process exit) */
    pthread_mutex_unlock(&launch_mu);
    return run_inline(f, cdata, num_task);
  }
  start_workers();
  int n = num_task > 0 ? num_task : nthreads > 1 ? nthreads * TASKS_PER_THREAD : 1;
  atomic_store_explicit(&job_f, f, memory_order_relaxed);
  atomic_store_explicit(&job_cdata, cdata, memory_order_relaxed);
  atomic_store_explicit(&job_tasks, n, memory_order_relaxed);
  atomic_store(&finished, 0);
  atomic_store(&failed, 0);
  uint32_t gen = generation() + 1;
  atomic_store(&ticket, (uint64_t)gen << 32);  /* publishes the job (seq_cst, as is the read of `sleeping`) */
  if (atomic_load(&sleeping) > 0) {
    pthread_mutex_lock(&sleep_mu);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_mu);
  }
  in_pool = 1;
  run_tasks(gen, 1);
  in_pool = 0;
  long start = 0;
  for (unsigned k = 1; atomic_load_explicit(&finished, memory_order_acquire) < n; ++k) {
    /* the tasks left are running on other threads: spin, and yield once they take long (an oversubscribed CPU) */
    CPU_RELAX();
    if (k % 256 == 0) {
      long t = now_ns();
      if (!start) start = t;
      else if (t - start > SPIN_NS) sched_yield();
    }
  }
  int fails = atomic_load(&failed);
  pthread_mutex_unlock(&launch_mu);
  /* a task's error is raised on the thread that ran it: a worker's cannot reach the caller */
  if (fails == 1 && TVMFFIErrorSetRaisedFromCStr)
    TVMFFIErrorSetRaisedFromCStr("RuntimeError", "a parallel task of this kernel failed (on a pool thread)");
  return fails ? -1 : 0;
}

/* The library's entry point for the runtime (tvm-ffi's packed-function ABI, no arguments): installs this pool and
   returns its thread count, or 0 where TVM's pool stays (no parallel loops, or a barrier). */
int __tvm_ffi_edgeopt_thread_pool(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  (void)self, (void)args, (void)num_args;
  int installed = &__TVMBackendParallelLaunch != NULL && &__TVMBackendParallelBarrier == NULL;
  if (installed) __TVMBackendParallelLaunch = (void*)edgeopt_parallel_launch;
  result->type_index = 1;  /* kTVMFFIInt */
  result->zero_padding = 0;
  result->v_int64 = installed ? configured_threads() : 0;
  return 0;
}

__attribute__((destructor)) static void stop_workers(void) {
  pthread_mutex_lock(&launch_mu);  /* no launch is starting workers meanwhile; later ones run inline */
  atomic_store(&stop, 1);
  pthread_mutex_lock(&sleep_mu);
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&sleep_mu);
  for (int i = 1; i < MAX_THREADS; ++i) {
    if (atomic_load(&state[i]) != NONE) pthread_join(tid[i], NULL);
    atomic_store(&state[i], NONE);
  }
  pthread_mutex_unlock(&launch_mu);
}
