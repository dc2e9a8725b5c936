"""How much faster are the vectorised ``gae`` and ``discounted_returns`` than a plain double Python loop?

Times the NumPy references (``rlhf_edu.numpy.advantages``) and the PyTorch twins
(``rlhf_edu.torch.advantages``) on a batch of 1024 rows x 256 steps, with and without episode ends
(``dones``), against the plain double loop (over rows, then backwards over time, indexing the arrays
element by element, as the formula reads) computing the same thing; checks that every result equals the
loop's, and prints a table of speed-ups. A row is OK when its result matches and it is at least 10x
faster than the plain loop; the script exits non-zero if any row FAILs.

For honesty the table also shows a tuned loop (each row turned into Python lists first, no done factor
when there are no dones, ~3x faster than the plain one) and the speed-up against it, for information.
Everything runs on one thread (``torch.set_num_threads(1)``), and times are the best of several runs in
CPU time of this process (``time.process_time``; wall time on CUDA), so that other programs on a shared
machine distort them less.

Usage (about 15 s on a laptop CPU)::

    python benchmarks/advantages_speed.py [--batch 1024] [--steps 256] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from rlhf_edu.numpy import advantages as na
from rlhf_edu.torch import advantages as ta

MIN_SPEEDUP = 10.0
GAMMA, LAM = 0.99, 0.95


# ---------------------------------------------------------------- the plain loops (the definitions)
def plain_loop_returns(rewards, gamma, dones, last_value):
    """G_t = r_t + gamma (1 - d_t) G_{t+1}, G_T = last_value, one row and one step at a time."""
    batch, steps = rewards.shape
    out = np.zeros((batch, steps))
    for b in range(batch):
        g = last_value[b]
        for t in reversed(range(steps)):
            not_done = 1.0 if dones is None else 1.0 - dones[b, t]
            g = rewards[b, t] + gamma * not_done * g
            out[b, t] = g
    return out


def plain_loop_gae(rewards, values, gamma, lam, dones, last_value):
    """delta_t = r_t + gamma V_{t+1} (1 - d_t) - V_t; A_t = delta_t + gamma lam (1 - d_t) A_{t+1}."""
    batch, steps = rewards.shape
    advantages = np.zeros((batch, steps))
    for b in range(batch):
        a, next_value = 0.0, last_value[b]
        for t in reversed(range(steps)):
            not_done = 1.0 if dones is None else 1.0 - dones[b, t]
            delta = rewards[b, t] + gamma * next_value * not_done - values[b, t]
            a = delta + gamma * lam * not_done * a
            advantages[b, t] = a
            next_value = values[b, t]
    return advantages, advantages + values


def list_loop_returns(rewards, gamma, dones, last_value):
    """The same loop on Python lists (no NumPy scalar per element), the fastest pure-Python form."""
    out = []
    for b in range(len(rewards)):
        r = rewards[b].tolist()
        g = float(last_value[b])
        row = [0.0] * len(r)
        if dones is None:
            for t in range(len(r) - 1, -1, -1):
                g = r[t] + gamma * g
                row[t] = g
        else:
            d = dones[b].tolist()
            for t in range(len(r) - 1, -1, -1):
                g = r[t] + gamma * (1.0 - d[t]) * g
                row[t] = g
        out.append(row)
    return np.array(out)


def list_loop_gae(rewards, values, gamma, lam, dones, last_value):
    """The GAE loop on Python lists."""
    advantages = []
    for b in range(len(rewards)):
        r, v = rewards[b].tolist(), values[b].tolist()
        d = dones[b].tolist() if dones is not None else [0.0] * len(r)
        a, next_v = 0.0, float(last_value[b])
        row = [0.0] * len(r)
        for t in range(len(r) - 1, -1, -1):
            not_done = 1.0 - d[t]
            delta = r[t] + gamma * next_v * not_done - v[t]
            a = delta + gamma * lam * not_done * a
            row[t] = a
            next_v = v[t]
        advantages.append(row)
    advantages = np.array(advantages)
    return advantages, advantages + values


# ---------------------------------------------------------------- timing
def best_time(fn, repeats, clock):
    """Best seconds of ``repeats`` calls (after one warm-up call); returns (seconds, result)."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        result = fn()
        best = min(best, clock() - start)
    return best, result


def as_numpy(out):
    if isinstance(out, tuple):
        return tuple(as_numpy(o) for o in out)
    return out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out


def same(got, expected):
    if isinstance(expected, tuple):
        return all(same(g, e) for g, e in zip(got, expected))
    return np.allclose(got, expected, rtol=1e-9, atol=1e-9)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="device of the torch twin (cpu or cuda)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)

    rng = np.random.default_rng(0)
    shape = (args.batch, args.steps)
    rewards = rng.normal(size=shape)
    values = rng.normal(size=shape)
    last_value = rng.normal(size=args.batch)
    dones = (rng.random(shape) < 0.02).astype(np.float64)  # episodes of ~50 steps
    tensors = {k: torch.tensor(v, device=device) for k, v in
               dict(rewards=rewards, values=values, last_value=last_value, dones=dones).items()}

    clock = time.perf_counter if device.type == "cuda" else time.process_time
    loop_repeats = max(1, args.repeats // 2)
    rows, failed = [], False
    for fn_name in ("discounted_returns", "gae"):
        for with_dones in (False, True):
            d = dones if with_dones else None
            td = tensors["dones"] if with_dones else None
            if fn_name == "discounted_returns":
                plain = lambda: plain_loop_returns(rewards, GAMMA, d, last_value)  # noqa: E731
                tuned = lambda: list_loop_returns(rewards, GAMMA, d, last_value)  # noqa: E731
                reference = lambda: na.discounted_returns(rewards, GAMMA, d, last_value)  # noqa: E731
                twin = lambda: ta.discounted_returns(  # noqa: E731
                    tensors["rewards"], GAMMA, td, tensors["last_value"])
            else:
                plain = lambda: plain_loop_gae(rewards, values, GAMMA, LAM, d, last_value)  # noqa: E731
                tuned = lambda: list_loop_gae(rewards, values, GAMMA, LAM, d, last_value)  # noqa: E731
                reference = lambda: na.gae(rewards, values, GAMMA, LAM, d, last_value)  # noqa: E731
                twin = lambda: ta.gae(tensors["rewards"], tensors["values"], GAMMA, LAM, td,  # noqa: E731
                                      tensors["last_value"])
            plain_s, expected = best_time(plain, loop_repeats, time.process_time)
            tuned_s, tuned_out = best_time(tuned, loop_repeats, time.process_time)
            if not same(tuned_out, expected):
                raise AssertionError(f"the two loops disagree on {fn_name}: fix the benchmark")
            for impl, fn in (("numpy", reference), (f"torch {device.type}", twin)):
                if device.type == "cuda" and impl.startswith("torch"):
                    fn = lambda inner=fn: (inner(), torch.cuda.synchronize())[0]  # noqa: E731
                with torch.no_grad():
                    secs, got = best_time(fn, args.repeats, clock)
                ok_values = same(as_numpy(got), expected)
                speedup = plain_s / secs
                ok = ok_values and speedup >= MIN_SPEEDUP
                failed |= not ok
                status = "OK" if ok else ("FAIL (values differ)" if not ok_values else "FAIL (too slow)")
                rows.append((fn_name, "yes" if with_dones else "no", impl, secs * 1e3, plain_s * 1e3, speedup,
                             tuned_s * 1e3, tuned_s / secs, status))

    print(f"batch {args.batch} x {args.steps} steps, gamma {GAMMA}, lambda {LAM}, float64, 1 thread, best of "
          f"{args.repeats}; OK = equal results (rtol 1e-9) and >= {MIN_SPEEDUP:.0f}x the plain double loop\n")
    print(f"{'function':<20}{'dones':<7}{'impl':<11}{'ms':>8}{'plain loop ms':>15}{'speed-up':>10}"
          f"{'list loop ms':>14}{'speed-up':>10}  status")
    for name, with_d, impl, ms, plain_ms, speedup, tuned_ms, tuned_speedup, status in rows:
        print(f"{name:<20}{with_d:<7}{impl:<11}{ms:>8.2f}{plain_ms:>15.1f}{speedup:>9.1f}x"
              f"{tuned_ms:>14.1f}{tuned_speedup:>9.1f}x  {status}")
    print("\nFAIL" if failed else "\nall OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
