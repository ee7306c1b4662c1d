"""Process hygiene of the real cluster: one thread per worker, a router that never
unpickles, no process or temporary directory left behind however the launcher
ends, and the stdin-driven console.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from multiprocessing.connection import Client as connect

import pytest
from conftest import WAIT, all_pids, gone, proc_state, put_all, run_ops, wait_until

import raftmp
from raftmp.core.session import DONE
from raftmp.transports import wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def raw_link(cluster, requested: int = wire.ANY):
    """A bare endpoint on the cluster's router: (connection, endpoint id)."""
    conn = connect(cluster.address, family="AF_UNIX")
    conn.send_bytes(wire.hello(requested))
    assert conn.poll(WAIT), "the router did not answer the hello"
    return conn, wire.HELLO_ID.unpack(conn.recv_bytes())[0]


# ---------------------------------------------------------------------- threads


def test_each_worker_has_one_thread_also_under_load(seed):
    with raftmp.Cluster(3, drop=0.1, seed=seed) as cluster:
        for s in cluster.stats()["nodes"]:
            assert s["threads"] == 1, f"seed {seed}: node {s['node']} runs {s['threads']} threads"
        kv = cluster.client()
        # Keep many operations in flight and sample the thread counts meanwhile.
        for i in range(100):
            kv.submit("put", f"k{i}", "x" * 1000)
        sampled = 0
        while kv.in_flight:
            for i in cluster.ids:
                s = cluster.node_status(i)
                assert s["threads"] == 1, f"seed {seed}: node {i} under load: {s}"
                sampled += 1
            kv.poll(0.01)
        assert sampled >= 3
        cluster.kill(0)
        cluster.restart(0)
        wait_until(lambda: cluster.node_status(0).get("alive"), WAIT, "node 0 back")
        assert cluster.node_status(0)["threads"] == 1


# ------------------------------------------------------------- opaque payloads


def test_router_forwards_non_pickle_payload_byte_for_byte(seed):
    with raftmp.Cluster(3, seed=seed) as cluster:
        a, a_id = raw_link(cluster)
        b, b_id = raw_link(cluster)
        try:
            payload = b"\x80\x05 not a pickle \xff" + bytes(range(256))
            a.send_bytes(wire.HEADER.pack(a_id, b_id, 7) + payload)
            assert b.poll(WAIT), f"seed {seed}: the packet never arrived"
            got = b.recv_bytes()
            assert got == wire.HEADER.pack(a_id, b_id, 7) + payload
            # The same garbage to a worker: the router forwards it and counts it as a
            # packet, the worker is the one that finds it undecodable.
            before = cluster.node_status(1)["bad_packets"]
            a.send_bytes(wire.HEADER.pack(a_id, 1, 1) + payload)
            wait_until(lambda: cluster.node_status(1)["bad_packets"] == before + 1, WAIT,
                       f"node 1 to count the bad packet (seed {seed})")
            router = cluster.stats()["router"]
            assert router["total"]["malformed"] == 0, router["total"]
            assert router["links"][(a_id, 1)]["delivered"] == 1, router["links"][(a_id, 1)]
        finally:
            a.close()
            b.close()
        assert all(s["alive"] for s in cluster.stats()["nodes"])
        cluster.client().put("still", "serving")


# ------------------------------------------------------------ nothing left behind


def test_stop_leaves_no_process_and_no_tempdir(seed):
    cluster = raftmp.Cluster(3, seed=seed).start()
    pids = all_pids(cluster.pids)
    runtime = cluster.runtime_dir
    assert all(not gone(p) for p in pids)
    assert os.path.isdir(runtime)
    cluster.kill(1)
    cluster.restart(1)
    pids = sorted(set(pids) | set(all_pids(cluster.pids)))
    cluster.stop()
    assert all(gone(p) for p in pids), {p: proc_state(p) for p in pids}
    assert not os.path.exists(runtime)
    cluster.stop()  # idempotent


LAUNCHER = textwrap.dedent("""
    import json, signal, sys, time
    import raftmp
    # Ctrl-C as in a terminal, even when this test runs as a background job
    # (whose children start with SIGINT ignored, so Python would keep ignoring it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with raftmp.Cluster(3, seed={seed}) as cluster:
        cluster.client().put("x", "1")
        print(json.dumps({{"pids": cluster.pids, "dir": cluster.runtime_dir}}), flush=True)
        time.sleep(600)
""")


def _start_launcher(seed):
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER.format(seed=seed)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"seed {seed}: the launcher did not start: {proc.stderr.read()}")
    info = json.loads(line)
    pids = all_pids(info["pids"])
    assert len(pids) == 4 and all(not gone(p) for p in pids)
    return proc, pids, info["dir"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_launcher_death_leaves_nothing_behind(sig, seed):
    proc, pids, runtime = _start_launcher(seed)
    try:
        assert os.path.isdir(runtime)
        proc.send_signal(sig)
        proc.wait(timeout=15)
        wait_until(lambda: all(gone(p) for p in pids), 10,
                   f"every router/worker of a launcher ended by {sig.name} to exit: "
                   f"{ {p: proc_state(p) for p in pids} }")
        wait_until(lambda: not os.path.exists(runtime), 10,
                   f"{runtime} to be removed after {sig.name}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for p in pids:
            if not gone(p):
                os.kill(p, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


# ---------------------------------------------------------------------- console


def test_console_driven_from_stdin(seed):
    script = "\n".join([  # noqa: FLY002
        "help",
        "put a 1",
        "get a",
        "get nothing",
        "cas a 1 2",
        "cas a 1 3",
        "cas fresh - new",
        "get a",
        "del a",
        "del a",
        "leader",
        "status",
        "kill 1",
        "put b after-kill",
        "get b",
        "restart 1",
        "partition 0,1 2",
        "heal",
        "faults drop=0.1 delay=0,2",
        "frobnicate now",
        "put onlykey",
        "kill 9",
        "faults drop=2",
        "get 'unbalanced",
        "",
        "get fresh",
        "quit",
        "put never reached",
    ]) + "\n"
    proc = subprocess.run([sys.executable, "-m", "raftmp", "run", "--nodes", "3", "--seed",
                           str(seed)], input=script, capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)
    out = proc.stdout
    assert proc.returncode == 0, f"seed {seed}: exit {proc.returncode}\n{out}\n{proc.stderr}"
    lines = [ln.strip() for ln in out.splitlines()]
    assert f"seed={seed}" in lines[0], lines[0]
    assert lines[1].startswith("leader: node "), lines[1]

    def after(prefix: str) -> list[str]:
        i = next((k for k, ln in enumerate(lines) if ln.startswith(prefix)), None)
        assert i is not None, f"no line starting with {prefix!r}:\n{out}"
        return lines[i:]

    rest = after("commands:")
    assert any("partition" in ln for ln in rest[:12])
    # Results, in order.
    rest = after("ok")
    assert rest[:9] == ["ok", "1", "(absent)", "swapped", "not swapped", "swapped", "2",
                        "deleted", "(absent)"], f"seed {seed}:\n{out}"
    assert rest[9].isdigit(), rest[9]                      # leader
    assert "role" in rest[10] and "term" in rest[10]       # status table header
    assert any(ln.startswith("router:") and "packets" in ln for ln in rest), out
    assert "killed node 1" in lines
    assert lines[lines.index("killed node 1") + 1:][:2] == ["ok", "after-kill"], out
    assert "restarted node 1" in lines
    assert "partitioned 0,1 | 2" in lines
    assert "healed" in lines
    faults = [ln for ln in lines if ln.startswith("faults:") and "drop=0.1 " in ln]
    assert faults and faults[0].endswith("delay=0,2 ms"), out     # milliseconds
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 5, f"seed {seed}: errors {errors}\n{out}"
    assert "unknown command 'frobnicate'" in errors[0]
    assert errors[1] == "error: usage: put KEY VALUE"
    assert "no node 9" in errors[2]
    assert "drop" in errors[3]
    assert "quotation" in errors[4].lower()
    assert lines[-1] == "new", f"the console must go on after errors and stop at quit:\n{out}"
    assert "never" not in out


def test_console_ends_at_eof(seed):
    proc = subprocess.run([sys.executable, "-m", "raftmp", "run", "--nodes", "1", "--seed",
                           str(seed)], input="put k v\nget k\n", capture_output=True,
                          text=True, timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["ok", "v"], proc.stdout


def test_pickle_not_needed_by_router_for_cluster_traffic(seed, monkeypatch, tmp_path):
    """A router forked with a poisoned ``pickle.loads`` still routes a whole workload:
    it never unpickles (workers and clients are forked before the poison, or undo it)."""
    import raftmp.launcher as launcher

    marker = tmp_path / "router-unpickled"
    real_start = launcher.start_router

    def poisoned_start(ctx, *args, **kwargs):
        real_loads = pickle.loads

        def boom(*a, **k):
            marker.write_text(f"pickle.loads called in pid {os.getpid()}")
            raise AssertionError("the router unpickled a payload")
        # Poison only in the router child: patch right before its fork, undo right after.
        pickle.loads = boom
        try:
            return real_start(ctx, *args, **kwargs)
        finally:
            pickle.loads = real_loads

    monkeypatch.setattr("raftmp.cluster.start_router", poisoned_start)
    with raftmp.Cluster(3, seed=seed) as cluster:
        kv = cluster.client()
        put_all(kv, {f"k{i}": str(i) for i in range(50)}, seed)
        outs = run_ops(kv, [("get", f"k{i}") for i in range(50)])
        assert all(o.outcome == DONE and o.result == str(i) for i, o in enumerate(outs))
        router = cluster.stats()["router"]
        assert router["total"]["delivered"] >= 4  # requests, appends, acks, replies all passed it
        assert proc_state(cluster.pids["router"]) not in (None, "Z"), "the router died"
    assert not marker.exists(), marker.read_text()
