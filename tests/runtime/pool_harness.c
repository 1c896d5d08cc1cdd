/* Drives edgeopt/runtime/thread_pool.c the way TVM's generated code does, for tests/runtime/test_thread_pool.py:
   it defines the launch hook TVM's code defines, installs the pool through the library entry the runtime calls,
   and launches a lambda that counts how often each task ran. */
#include <stdatomic.h>
#include <stdint.h>

typedef struct { void* sync_handle; int32_t num_task; } TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);
typedef int (*FLaunch)(FTVMParallelLambda f, void* cdata, int num_task);
typedef struct { int32_t type_index; int32_t zero_padding; int64_t v_int64; } TVMFFIAny;

void* __TVMBackendParallelLaunch;  /* as in an object TVM generated: the runtime points it at a pool */
int __tvm_ffi_edgeopt_thread_pool(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

long install(void) {
  TVMFFIAny r = {0, 0, 0};
  __tvm_ffi_edgeopt_thread_pool(0, 0, 0, &r);
  return r.type_index == 1 ? (long)r.v_int64 : -1;
}

struct job {
  int* hits;          /* hits[task]: how often the task ran (tasks past `cap` are counted in hits[cap]) */
  int cap, fail_task, nested;
  _Atomic int num_task, nested_bad;
};

static int count(int task, TVMParallelGroupEnv* env, void* cdata) {
  struct job* j = cdata;
  atomic_store(&j->num_task, env->num_task);
  __atomic_fetch_add(&j->hits[task < j->cap ? task : j->cap], 1, __ATOMIC_RELAXED);
  if (j->nested) {  /* a launch from inside a task: runs its 3 tasks inline */
    int inner_hits[4] = {0, 0, 0, 0};
    struct job inner = {inner_hits, 3, -1, 0};
    int rc = ((FLaunch)__TVMBackendParallelLaunch)(count, &inner, 3);
    if (rc || inner_hits[0] != 1 || inner_hits[1] != 1 || inner_hits[2] != 1 || inner_hits[3]) j->nested_bad = 1;
  }
  for (volatile int spin = 0; spin < 2000; ++spin) {}  /* some work, so that tasks overlap */
  return task == j->fail_task ? -1 : 0;
}

/* One launch (num_task 0: the pool picks); returns the launch's return code, *num_task the tasks it ran. */
int launch(int num_task, int* hits, int cap, int fail_task, int nested, int* num_task_seen, int* nested_bad) {
  struct job j = {hits, cap, fail_task, nested};
  int rc = ((FLaunch)__TVMBackendParallelLaunch)(count, &j, num_task);
  *num_task_seen = atomic_load(&j.num_task);
  *nested_bad = atomic_load(&j.nested_bad);
  return rc;
}
