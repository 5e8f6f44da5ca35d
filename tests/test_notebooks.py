"Notebooks in a real Jupyter kernel: flagged cells skip themselves where their resource is missing."
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from mixcot_nb.core import has_resource


def test_gpu_and_vllm_cells_skip_cleanly_in_a_kernel(tmp_path):
    nb = new_notebook(cells=[new_code_cell("%load_ext mixcot_nb.core"),
                             new_code_cell("#| gpu\nimport torch\nx = torch.zeros(1, device='cuda')\nprint('ran on', x.device)"),
                             new_code_cell("#| vllm\nfrom vllm import LLM\nprint('vllm imported')"),
                             new_code_cell("print('after', 1 + 1)")])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells]
    if not has_resource("gpu"): assert out[1].startswith("skipped: this cell needs gpu")
    else: assert "ran on cuda" in out[1]
    if not has_resource("vllm"): assert out[2].startswith("skipped: this cell needs vllm")
    assert out[3] == "after 2\n"
