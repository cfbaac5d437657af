// Times the filter's per-request work (src/hotpath_bench.zig) in V8, the engine Envoy embeds.
// usage: node bench/dataplane_hotpath.mjs module.wasm [iterations]  -> one JSON line
import { readFileSync } from "node:fs";

const [file, itersArg] = process.argv.slice(2);
const iterations = Number(itersArg || 200000);
const module = new WebAssembly.Module(readFileSync(file));
const env = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.kind === "function") (env[imp.module] ??= {})[imp.name] = () => 0;
}
const { exports } = new WebAssembly.Instance(module, env);
if (exports.bench_init() !== 0) throw new Error("configuration did not parse");
const out = {};
for (const [kind, name] of [[0, "tools_call"], [1, "tools_list"], [2, "initialize"], [4, "auth_apikey"]]) {
  exports.bench_run(kind, 20000); // warm-up: let V8 tier up (TurboFan), as in a long-lived Envoy
  const runs = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    exports.bench_run(kind, iterations);
    runs.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  runs.sort((a, b) => a - b);
  out[name + "_ns"] = Math.round(runs[0]);
  out[name + "_ns_median"] = Math.round(runs[2]);
}
console.log(JSON.stringify(out));
