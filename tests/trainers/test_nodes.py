"""Several nodes from SLURM's variables (trainers/nodes.py): each task of a step is one node, node 0
hosts the rendezvous; outside a step of several tasks nothing is derived."""
from __future__ import annotations

import pytest

from trainers.launch import torchrun_command
from trainers.nodes import PORT_BASE, PORT_SPAN, Nodes, first_host, from_slurm, names_nodes

STEP = {"SLURM_JOB_ID": "4321", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1",
        "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NNODES": "2"}


@pytest.mark.parametrize("nodelist, host", [("vm", "vm"), ("gpu[07-08]", "gpu07"), ("gpu[3,5-9],cpu1", "gpu3"),
                                            ("a-1,b-2", "a-1"), ("node[001-004]", "node001")])
def test_first_host_of_a_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_a_node_list_without_a_host_is_an_error():
    with pytest.raises(ValueError, match=r"SLURM node list '\[1-2\]': no host name"):
        first_host("[1-2]")


def test_a_step_of_two_tasks_is_two_nodes_meeting_on_the_first_host():
    nodes = from_slurm(STEP)
    assert (nodes.count, nodes.rank, nodes.master_addr, nodes.run_id) == (2, 1, "gpu07", "slurm-4321.0")
    assert PORT_BASE <= nodes.master_port < PORT_BASE + PORT_SPAN
    assert from_slurm({**STEP, "SLURM_PROCID": "0"}).master_port == nodes.master_port  # every node agrees
    assert from_slurm({**STEP, "SLURM_JOB_ID": "4322"}).master_port != nodes.master_port  # another job
    assert nodes.torchrun_args() == ["--nnodes", "2", "--node-rank", "1", "--master-addr", "gpu07",
                                     "--master-port", str(nodes.master_port)]


def test_the_users_master_address_and_port_win():
    nodes = from_slurm({**STEP, "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29512"})
    assert (nodes.master_addr, nodes.master_port) == ("10.0.0.5", 29512)


@pytest.mark.parametrize("env", [{}, {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"},  # batch script
                                 {**STEP, "SLURM_STEP_NUM_TASKS": "1"}])
def test_no_nodes_outside_a_step_of_several_tasks(env):
    assert from_slurm(env) is None


def test_torchrun_takes_the_nodes_instead_of_its_own_rendezvous(tmp_path):
    nodes = Nodes(count=2, rank=0, master_addr="gpu07", master_port=24000, run_id="r")
    cmd = torchrun_command(tmp_path / "t.yaml", tmp_path, tmp_path, 4, torchrun_args=nodes.torchrun_args())
    assert "--rdzv-backend" not in cmd and cmd[cmd.index("--nnodes") + 1] == "2"
    assert cmd[cmd.index("--nproc-per-node") + 1] == "4" and cmd[cmd.index("--master-addr") + 1] == "gpu07"
    single = torchrun_command(tmp_path / "t.yaml", tmp_path, tmp_path, 4)
    assert single[single.index("--rdzv-endpoint") + 1] == "localhost:0"
    assert names_nodes(["--rdzv-endpoint", "x:1"]) and not names_nodes(["--max-restarts", "1"])
