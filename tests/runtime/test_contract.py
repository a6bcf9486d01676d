"""runtime/contract.py: the typed manifest reads every bundle written so far and writes only checked ones."""

import json

import pytest

from c2d.runtime.bundle import BundleError, read_manifest, write_manifest
from c2d.runtime.contract import GENERATOR_FILE, MANIFEST_FILE, Manifest
from c2d.runtime.generate import default_bundle


def test_the_shipped_manifest_reads_as_types_and_keeps_what_it_does_not_type():
    bundle = default_bundle()
    manifest = read_manifest(bundle)
    on_disk = json.loads((bundle / MANIFEST_FILE).read_text())
    assert manifest.format_version == 1 and manifest.variant == "single-backbone" and manifest.precision == "fp32"
    assert manifest.generator.file == GENERATOR_FILE and manifest.generator.bytes == (bundle / GENERATOR_FILE).stat().st_size
    assert manifest.vocoder.kind == "fourier" and manifest.generator.validation["max_relative_error"]["eps"] < 1e-4
    assert manifest.files() == [
        on_disk["generator"]["file"],
        on_disk["generator"]["reference"],
        on_disk["vocoder"]["file"],
        on_disk["vocoder"]["reference"],
    ]
    assert manifest.as_dict() == on_disk  # nothing lost: a derived bundle starts from exactly what was written
    assert Manifest.from_dict(manifest.as_dict()) == manifest


def test_write_manifest_stamps_the_files_and_refuses_a_bad_schema(tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(default_bundle(), bundle)
    data = read_manifest(bundle).as_dict()
    data["generator"]["bytes"], data["note"] = 1, "kept"
    written = write_manifest(bundle, data)
    assert written.generator.bytes == (bundle / GENERATOR_FILE).stat().st_size and written.as_dict()["note"] == "kept"
    assert read_manifest(bundle) == written
    with pytest.raises(BundleError, match="variant"):
        write_manifest(bundle, {**data, "variant": "three-model"})
    assert read_manifest(bundle) == written  # the refused manifest was not written
