"""`import seqvq` (and the toolkit-free adapters) import no ASR toolkit; an adapter whose toolkit is missing says how
to install it."""
import subprocess
import sys

import pytest

TOOLKITS = ("speechbrain", "espnet", "espnet2", "k2", "icefall", "nemo", "fairseq", "torchaudio")


def modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_core_and_toolkit_free_adapters_import_no_toolkit():
    loaded = modules_loaded_by("import seqvq, seqvq.integrations.speechbrain, seqvq.integrations.icefall")
    assert "seqvq" in loaded and not loaded & set(TOOLKITS)


@pytest.mark.parametrize("adapter, toolkit, hint", [("espnet", "espnet2", ".ci/install_toolkits.sh"),
                                                   ("nemo", "nemo", "nemo_toolkit[asr]")])
def test_adapter_without_its_toolkit_says_how_to_install_it(adapter, toolkit, hint):
    code = (f"import sys; sys.modules[{toolkit!r}] = None\n"
            f"try:\n    import seqvq.integrations.{adapter}\nexcept ImportError as error:\n    print(error)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert hint in output
