"""`import seqvq` (and the toolkit-free adapters) import no ASR toolkit; the ESPnet adapter names the install script
when ESPnet is missing."""
import subprocess
import sys

TOOLKITS = ("speechbrain", "espnet", "espnet2", "k2", "icefall", "nemo", "fairseq", "torchaudio")


def modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted({{name.split('.')[0] for name in sys.modules}})))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_core_and_toolkit_free_adapters_import_no_toolkit():
    loaded = modules_loaded_by("import seqvq, seqvq.integrations.speechbrain, seqvq.integrations.icefall")
    assert "seqvq" in loaded and not loaded & set(TOOLKITS)


def test_espnet_adapter_without_espnet_names_the_install_script():
    code = ("import sys; sys.modules['espnet2'] = None\n"
            "try:\n    import seqvq.integrations.espnet\nexcept ImportError as error:\n    print(error)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert ".ci/install_toolkits.sh" in output
