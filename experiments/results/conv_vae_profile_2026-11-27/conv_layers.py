import time, statistics, jax, jax.numpy as jnp, numpy as np
from mnistgen_jax.models import nets
def med(f, *a, n=15):
  f(*a); ts=[]
  for _ in range(n):
    t=time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter()-t)
  return statistics.median(ts)*1e3
dn=("NHWC","HWIO","NHWC")
def conv(x,k,s=1): return jax.lax.conv_general_dilated(x,k,(s,s),"SAME",dimension_numbers=dn)
def patches(x,k,s=1):
  kh=k.shape[0]; return nets.extract_patches(x,kh,s) @ k.reshape(-1,k.shape[-1])
n=2048; a=jnp.ones((n,n)); mm=jax.jit(lambda a:a@a); t=med(mm,a); print(f"roofline {2*n**3/t/1e6:.1f} GFLOP/s")
for name,(H,Cin,Cout,K,S) in {"up1 7x7 64->128 k3":(7,64,128,3,1),"up2 14x14 32->4 k3":(14,32,4,3,1),
    "enc2 14x14 32->64 k4s2":(14,32,64,4,2),"enc1 28x28 1->32 k4s2":(28,1,32,4,2)}.items():
  B=128; x=jax.random.normal(jax.random.PRNGKey(0),(B,H,H,Cin)); k=jax.random.normal(jax.random.PRNGKey(1),(K,K,Cin,Cout))*0.1
  y,vjp=jax.vjp(lambda x,k:conv(x,k,S),x,k); dy=jnp.ones_like(y)
  Ho=y.shape[1]; fl=2*B*Ho*Ho*K*K*Cin*Cout/1e6
  for impl,f in (("native",conv),("patches",patches)):
    fwd=jax.jit(lambda x,k:f(x,k,S))
    dx=jax.jit(lambda x,k,dy: jax.vjp(lambda x:f(x,k,S),x)[1](dy)[0])
    dk=jax.jit(lambda x,k,dy: jax.vjp(lambda k:f(x,k,S),k)[1](dy)[0])
    both=jax.jit(lambda x,k,dy: jax.vjp(lambda x,k:f(x,k,S),x,k)[1](dy))
    tf,tx,tk,tb=med(fwd,x,k),med(dx,x,k,dy),med(dk,x,k,dy),med(both,x,k,dy)
    print(f"{name:24s} {impl:8s} fwd {tf:6.2f} ms ({fl/tf:5.1f} GF/s) dx {tx:6.2f} dk {tk:6.2f} dx+dk {tb:6.2f} ms  [{fl} MF]")
