/**
 * Every kernel the ladder chooses variants for, in one explicit list: a kernel module exports its
 * descriptor and this file names it, so the ladder knows the same kernels whichever modules a
 * program happens to import (no registration by import side effect).
 *
 * The kernel modules import the process-wide ladder (src/kernels/ladder.ts), which reads this
 * list: the modules form a cycle, so the list is built when first asked for, never while the
 * kernel modules are still loading (a constant array here would read their exports too early).
 */
import { ADAMW_LADDER } from "./adamw.ts";
import { ATTENTION_LADDER } from "./attention.ts";
import { CROSS_ENTROPY_LADDER } from "./cross_entropy.ts";
import { GRAD_NORM_LADDER } from "./grad_norm.ts";
import { MATMUL_LADDER } from "./matmul.ts";
import { MATMUL_4BIT_LADDER, MATMUL_4BIT_T_LADDER } from "./matmul_4bit.ts";
import { RMSNORM_LADDER } from "./rmsnorm.ts";
import type { LadderKernel } from "./ladder_registry.ts";

/** Every laddered kernel, a fresh array each call. */
export function ladderKernels(): LadderKernel[] {
  return [
    MATMUL_LADDER,
    MATMUL_4BIT_LADDER,
    MATMUL_4BIT_T_LADDER,
    ATTENTION_LADDER,
    CROSS_ENTROPY_LADDER,
    RMSNORM_LADDER,
    GRAD_NORM_LADDER,
    ADAMW_LADDER,
  ];
}
