/* Hands the coverage counters of a Zig `-ffuzz` build to libFuzzer.
 *
 * Zig instruments with LLVM's inline 8-bit counters and compare tracing but
 * emits no module constructor registering the counters (its own fuzzer finds
 * the sections by their linker symbols). This one registers them, and the PC
 * table, which Zig writes as one address per counter while libFuzzer reads
 * (address, flags) pairs. Compiled without instrumentation (run.py). */
#include <stdint.h>
#include <stdlib.h>

extern uint8_t __start___sancov_cntrs[], __stop___sancov_cntrs[];
extern const uintptr_t __start___sancov_pcs1[], __stop___sancov_pcs1[];
void __sanitizer_cov_8bit_counters_init(uint8_t *start, uint8_t *stop);
void __sanitizer_cov_pcs_init(const uintptr_t *beg, const uintptr_t *end);

__attribute__((constructor)) static void mcpgw_sancov_register(void) {
  size_t n = (size_t)(__stop___sancov_pcs1 - __start___sancov_pcs1);
  uintptr_t *table = calloc(2 * n, sizeof(uintptr_t));
  if (table == NULL) abort();
  for (size_t i = 0; i < n; i++) table[2 * i] = __start___sancov_pcs1[i];
  __sanitizer_cov_8bit_counters_init(__start___sancov_cntrs, __stop___sancov_cntrs);
  __sanitizer_cov_pcs_init(table, table + 2 * n);
}
