/**
 * Dawn's subgroup-matrix builtins (chromium_experimental_subgroup_matrix) emulated in plain
 * WGSL, so the kernels that use them can run on adapters without the feature (lavapipe, CI) and
 * their tiling, staging and epilogues be checked against the float64 references. The semantics
 * are those of Dawn's docs/dawn/features/subgroup_matrix.md, written independently of the kernels:
 * - subgroup_matrix_left<T, K, M> is M rows x K columns, subgroup_matrix_right<T, N, K> is K x N,
 *   subgroup_matrix_result<T, N, M> is M x N;
 * - subgroupMatrixLoad<L, row_major>(&arr, offset, stride): element [r, c] = arr[offset + r *
 *   stride + c]; col_major: arr[offset + c * stride + r]; subgroupMatrixStore<major>(&arr,
 *   offset, value, stride) the same mapping the other way;
 * - subgroupMatrixMultiplyAccumulate(l, r, acc) = l * r + acc, here with f16 operands widened to
 *   f32 (exact) and f32 sums in k order.
 * How it is emulated (cheap to compile, as lavapipe's LLVM chokes on big per-invocation arrays):
 * - a left or right matrix is a descriptor (array, offset, stride, majorness) and its elements
 *   are read when multiplied, not when loaded: right as long as the array is not written between
 *   the load and the multiply, as in the kernels (both sit between the same two barriers);
 * - a result matrix is spread over the workgroup as a subgroup's is over its lanes: invocation l
 *   holds elements l, l + WG, l + 2 WG, ... (row-major order), so a store writes each element
 *   once. The kernels are one subgroup per workgroup and name their workgroup size `WG` and
 *   their local_invocation_index `li` in each entry point.
 * Only what the kernels use is covered: f16 operands, f32 results, loads and stores naming a
 * module-scope array (`&name`).
 */

interface MatrixType {
  kind: "left" | "right" | "result";
  rows: string;
  cols: string;
}

const TYPE_RE = /subgroup_matrix_(left|right|result)<\s*(f16|f32)\s*,\s*(\w+)\s*,\s*(\w+)\s*>/g;
const LOAD_RE = /subgroupMatrixLoad<\s*(\w+)\s*,\s*(row|col)_major\s*>\(\s*&(\w+)\s*,/g;
const STORE_RE = /subgroupMatrixStore<\s*(row|col)_major\s*>\(\s*&(\w+)\s*,/g;
const ENTRY_RE = /@compute[^{]*\bli\s*:\s*u32[^{]*\{/;

/**
 * The WGSL `code` with the subgroup-matrix enable, types and builtins replaced by plain WGSL.
 * `opaqueZero` is a WGSL expression that is 0 at run time but unknown to the compiler (e.g. a
 * bit of the uniform the kernel never sets): added to the emulation's loop bounds, it keeps
 * lavapipe's LLVM from unrolling them.
 */
export function emulateSubgroupMatrices(code: string, opaqueZero = "0u"): string {
  if (!/enable chromium_experimental_subgroup_matrix;/.test(code)) {
    throw new Error("emulateSubgroupMatrices: the shader does not enable subgroup matrices");
  }
  // Comments go first: they may name the builtins.
  let out = code.replace(/\/\/[^\n]*/g, "")
    .replace(/enable chromium_experimental_subgroup_matrix;/, "");
  const types = new Map<string, MatrixType>(); // struct name -> shape
  out = out.replace(TYPE_RE, (_m, kind: MatrixType["kind"], _t, a: string, b: string) => {
    // Template order is (columns, rows) for all three types.
    const name = `Emu_${kind}_${b}_${a}`;
    types.set(name, { kind, rows: b, cols: a });
    return name;
  });
  const aliasOf = new Map<string, string>();
  for (const m of out.matchAll(/alias\s+(\w+)\s*=\s*(Emu_\w+)\s*;/g)) aliasOf.set(m[1], m[2]);
  // Operand arrays each get an id, per matrix type.
  const sources = new Map<string, string[]>(); // type -> arrays loaded from
  out = out.replace(LOAD_RE, (_m, alias: string, major: string, array: string) => {
    const type = aliasOf.get(alias) ?? alias;
    const t = types.get(type);
    if (!t || t.kind === "result") {
      throw new Error(`emulateSubgroupMatrices: loads of ${alias} are not emulated`);
    }
    const arrays = sources.get(type) ?? [];
    if (!arrays.includes(array)) arrays.push(array);
    sources.set(type, arrays);
    return `${type}(${arrays.indexOf(array)}u, u32(${major === "col"}), `;
  });
  const stores = new Set<string>();
  out = out.replace(STORE_RE, (_m, major: string, array: string) => {
    stores.add(array);
    return `emu_store_${array}(li, ${major === "col"}, `;
  });
  out = out.replace(/subgroupMatrixMultiplyAccumulate\(/g, "emu_mma(li, ");
  if (/subgroupMatrix|subgroup_matrix/.test(out)) {
    throw new Error("emulateSubgroupMatrices: a subgroup-matrix feature this emulation lacks");
  }
  if (!ENTRY_RE.test(out)) {
    throw new Error("emulateSubgroupMatrices: no entry point names local_invocation_index li");
  }

  const byKind = (k: MatrixType["kind"]) => {
    const found = [...types].find(([, t]) => t.kind === k);
    if (!found) throw new Error(`emulateSubgroupMatrices: no ${k} matrix type`);
    return { name: found[0], ...found[1] };
  };
  const left = byKind("left");
  const right = byKind("right");
  const result = byKind("result");
  const perLane = `((${result.rows} * ${result.cols} + WG - 1) / WG)`;
  const at = "select(off + r * stride + c, off + c * stride + r, col)";
  const defs: string[] = [
    "// ---- subgroup-matrix emulation (tests/reference) ----",
    `fn emu_n(n: u32) -> u32 {\n  return n + ${opaqueZero};\n}`,
    `struct ${result.name} { v: array<f32, ${perLane}>, }`,
  ];
  for (const t of [left, right]) {
    // The struct's constructor (array id, col, offset, stride) is the emulated load.
    defs.push(`struct ${t.name} { arr: u32, col: u32, off: u32, stride: u32, }`);
    const cases = (sources.get(t.name) ?? []).map((a, i) =>
      `    case ${i}u: { return f32(${a}[i]); }`
    );
    defs.push(`fn emu_read_${t.name}(m: ${t.name}, r: u32, c: u32) -> f32 {
  let i = select(m.off + r * m.stride + c, m.off + c * m.stride + r, m.col != 0u);
  switch (m.arr) {
${cases.join("\n")}
    default: { return 0.0; }
  }
}`);
  }
  for (const array of stores) {
    defs.push(`fn emu_store_${array}(li: u32, col: bool, off: u32, m: ${result.name}, stride: u32) {
  for (var j = 0u; j < emu_n(${perLane}); j++) {
    let e = li + j * WG;
    if (e < ${result.rows} * ${result.cols}) {
      let r = e / ${result.cols};
      let c = e % ${result.cols};
      ${array}[${at}] = m.v[j];
    }
  }
}`);
  }
  defs.push(
    `fn emu_mma(li: u32, a: ${left.name}, b: ${right.name}, acc: ${result.name}) -> ${result.name} {
  var m = acc;
  for (var j = 0u; j < emu_n(${perLane}); j++) {
    let e = li + j * WG;
    if (e < ${result.rows} * ${result.cols}) {
      let r = e / ${result.cols};
      let c = e % ${result.cols};
      var s = m.v[j];
      for (var k = 0u; k < emu_n(${left.cols}); k++) {
        s += emu_read_${left.name}(a, r, k) * emu_read_${right.name}(b, k, c);
      }
      m.v[j] = s;
    }
  }
  return m;
}`,
  );
  return `${out}\n${defs.join("\n\n")}\n`;
}
