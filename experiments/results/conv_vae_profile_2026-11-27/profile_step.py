import sys, glob, gzip, json, collections, time, jax, jax.numpy as jnp, numpy as np
from mnistgen_jax import configs, data, trainer, parallel
from mnistgen_jax import train as train_lib
name = sys.argv[1] if len(sys.argv) > 1 else "conv_vae"
config = configs.get_config(name, train_loop="steps")
family, model, stage1 = trainer.build(config)
tr = data.load("mnist", "train")
tx, state = trainer.initial_state(family, model, config, 468, stage1)
step = jax.jit(family.training.step(model, tx, config))
x = train_lib.to_float(jnp.asarray(tr[0][:128])); y = jnp.asarray(tr[1][:128])
for _ in range(3): state, m = step(state, x, y)
jax.block_until_ready(m)
t = time.perf_counter()
for _ in range(20): state, m = step(state, x, y)
jax.block_until_ready(m); print("step ms", (time.perf_counter() - t) / 20 * 1e3)
jax.profiler.start_trace("/tmp/prof", create_perfetto_trace=True)
for _ in range(10): state, m = step(state, x, y)
jax.block_until_ready(m)
jax.profiler.stop_trace()
f = sorted(glob.glob("/tmp/prof/**/*.trace.json.gz", recursive=True))[-1]
ev = json.load(gzip.open(f))["traceEvents"]
agg = collections.Counter(); cnt = collections.Counter()
for e in ev:
  if e.get("ph") == "X": agg[e["name"]] += e["dur"]; cnt[e["name"]] += 1
for n, d in agg.most_common(40): print(f"{d/10/1e3:8.2f} ms/step  x{cnt[n]//10:3d}  {n[:110]}")
tot = collections.Counter()
for n, d in agg.items():
  if n.startswith("ThunkExecutor") or n.startswith("$"): continue
  k = "conv/matmul (ynn_fusion, convolution, dot)" if n.startswith(("ynn_fusion", "convolution", "dot")) else \
      "transposes/copies (depth_to_space, layouts)" if ("transpose" in n or "copy" in n) else "elementwise + reductions"
  tot[k] += d
for k, d in tot.items(): print(f"CAT {d/10/1e3:7.2f} ms/step  {k}")
