"""Each dataset adapter on a tiny copy of its dataset as distributed (file names, columns, folders,
DICOM attributes), through ``cfcl data prepare`` into an image store."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfcl.cli import main
from cfcl.data.datasets.common import DatasetError, assign_splits
from cfcl.data.imageio import ImageReadError
from cfcl.data.prepare import PrepareConfig, run
from cfcl.data.store import ImageStore
from cfcl.errors import ConfigError, StoreError
from support.datasets import CSV_OPTIONS, csv_root
from support.dicom import write_claiming, write_compressed, write_dicom

SIZE = 16


def prepare(root: Path, out: Path, dataset: str, **keys) -> ImageStore:
    config = PrepareConfig.model_validate({"dataset": dataset, "root": str(root), "size": SIZE, **keys})
    run(config, out)
    return ImageStore.open(out)


def image_of(store: ImageStore, image_id: str) -> np.ndarray:
    row = store.meta.index[store.meta["image_id"] == image_id]
    assert len(row) == 1, image_id
    return np.asarray(store.images[row[0]])


def assert_patient_level(store: ImageStore) -> None:
    per_patient = store.meta.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all(), per_patient[per_patient > 1]


# ----------------------------------------------------------------------------- PadChest


def padchest_root(tmp_path: Path) -> Path:
    root = tmp_path / "padchest"
    rows = []
    for i in range(24):
        patient = f"p{i // 2:03d}"
        image_id = f"{i:04d}_{patient}.png"
        image_dir = str(i % 3)
        rows.append(
            {
                "ImageID": image_id,
                "ImageDir": image_dir,
                "StudyDate_DICOM": 20150310,
                "StudyID": f"s{i}",
                "PatientID": patient,
                "PatientBirth": 1950.0 + i,
                "PatientSex_DICOM": "F" if i % 4 < 2 else "M",
                "ViewPosition_DICOM": "POSTEROANTERIOR",
                "Projection": "PA",
                "Pediatric": "No",
                "Manufacturer_DICOM": "PhilipsMedicalSystems" if i % 2 else "ImagingDynamicsCompanyLtd",
                "Labels": "['pneumonia', ' infiltrates']" if i % 3 == 0 else "['normal']",
            }
        )
        values = np.full((24, 32), 1000 + 100 * i, dtype=np.uint16)
        values[:, 16:] = 3000 + 100 * i
        (root / image_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(values).save(root / image_dir / image_id)
    rows[1]["Projection"] = "L"
    rows[2]["Pediatric"] = "Yes"
    rows[3]["Labels"] = "['exclude']"
    rows[4]["Labels"] = "['suboptimal study', 'normal']"
    pd.DataFrame(rows).to_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv")
    return root


def test_padchest_filters_labels_domains_splits_and_pixels(tmp_path):
    store = prepare(padchest_root(tmp_path), tmp_path / "out", "padchest")
    ids = set(store.meta["image_id"])
    assert len(store) == 20 and not ids & {"0001_p000.png", "0002_p001.png", "0003_p001.png", "0004_p002.png"}
    assert store.labels == ["negative", "pneumonia"]
    assert store.domains == ["ImagingDynamicsCompanyLtd", "PhilipsMedicalSystems"]
    row = store.meta.set_index("image_id").loc["0006_p003.png"]
    assert row["label"] == 1 and row["domain"] == 0 and row["sex"] == "M" and row["age"] == 2015 - 1956
    assert store.meta.set_index("image_id").loc["0007_p003.png", "label"] == 0
    assert_patient_level(store)
    assert set(store.meta["split"]) <= {"train", "val", "test"}
    image = image_of(store, "0006_p003.png")  # 16-bit, two levels: min-max maps them to 0 and 255
    assert (image[:, :6] == 0).all() and (image[:, 10:] == 255).all()
    assert store.info["dataset"] == "padchest" and store.info["ood_domains"] == []


def test_padchest_ood_domain_gets_ood_splits_without_leaking_test_patients(tmp_path):
    root = padchest_root(tmp_path)
    table = pd.read_csv(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", index_col=0)
    store = prepare(root, tmp_path / "out", "padchest", ood_domains=["PhilipsMedicalSystems"], test_fraction=0.4)
    ood = store.meta["domain"] == store.domains.index("PhilipsMedicalSystems")
    assert set(store.meta.loc[ood, "split"]) == {"ood_train", "ood_test"}
    assert set(store.meta.loc[~ood, "split"]) <= {"train", "val", "test"}
    assert store.info["ood_domains"] == [1]
    test_patients = set(store.meta.loc[store.meta["split"].isin(["test", "ood_test"]), "patient_id"])
    train_patients = set(store.meta.loc[store.meta["split"].isin(["train", "val", "ood_train"]), "patient_id"])
    assert not test_patients & train_patients and len(table) == 24


def test_padchest_missing_column_is_named(tmp_path):
    root = padchest_root(tmp_path)
    csv = root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    pd.read_csv(csv).drop(columns="Pediatric").to_csv(csv, index=False)
    with pytest.raises(DatasetError, match="PADCHEST_chest.*'Pediatric'"):
        prepare(root, tmp_path / "out", "padchest")


def test_padchest_findings_from_the_labels_list(tmp_path):
    root = padchest_root(tmp_path)
    store = prepare(root, tmp_path / "out", "padchest", padchest={"findings": ["infiltrates", "pneumonia"]})
    assert len(store) == 20 and store.findings == ["infiltrates", "pneumonia"]
    assert findings_of(store, "0006_p003.png") == [1.0, 1.0] and findings_of(store, "0007_p003.png") == [0.0, 0.0]
    meta = store.meta.set_index("image_id")
    assert meta.loc["0006_p003.png", "label"] == 1 and meta.loc["0007_p003.png", "label"] == 0
    assert store.labels == ["negative", "any finding"] and int(store.finding_matrix().sum()) == 2 * 7
    with pytest.raises(DatasetError, match=r"PADCHEST_chest.*: column 'Labels' never lists finding 'Pneumonia'"):
        prepare(root, tmp_path / "out2", "padchest", padchest={"findings": ["Pneumonia"]})


# ----------------------------------------------------------------------------- CheXpert


def chexpert_root(tmp_path: Path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    tables = {"train": [], "valid": []}
    for i in range(16):
        split = "valid" if i >= 14 else "train"  # patients 1-7 in train.csv, patient 8 in valid.csv
        patient = f"patient{i // 2 + 1:05d}"
        lateral = i == 5
        rel = f"{split}/{patient}/study1/view{i % 2 + 1}_{'lateral' if lateral else 'frontal'}.jpg"
        pneumonia = [1.0, 0.0, -1.0, np.nan][i % 4]
        tables[split].append(
            {
                "Path": f"CheXpert-v1.0-small/{rel}",
                "Sex": "Female" if i % 2 else "Male",
                "Age": 40 + i,
                "Frontal/Lateral": "Lateral" if lateral else "Frontal",
                "AP/PA": np.nan if lateral else ("AP" if i % 3 == 0 else "PA"),
                "No Finding": np.nan,
                "Cardiomegaly": 1.0,
                "Pneumonia": pneumonia,
                "Edema": [0.0, 0.0, -1.0, 1.0][i % 4],
                "Support Devices": np.nan,
            }
        )
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 16), 10 * i).save(root / rel, quality=95)
    for split, rows in tables.items():
        pd.DataFrame(rows).to_csv(root / f"{split}.csv", index=False)
    return root


@pytest.mark.parametrize("policy", ["zeros", "ones", "ignore"])
def test_chexpert_frontal_views_and_uncertain_policy(tmp_path, policy):
    root = chexpert_root(tmp_path)
    store = prepare(root, tmp_path / "out", "chexpert", chexpert={"views": ["AP", "PA"], "uncertain": policy})
    assert store.domains == ["AP", "PA"]
    meta = store.meta.set_index("image_id")
    assert "train/patient00003/study1/view2_lateral.jpg" not in meta.index
    uncertain = "train/patient00002/study1/view1_frontal.jpg"  # i = 2: Pneumonia -1
    if policy == "ignore":
        assert uncertain not in meta.index and len(store) == 15 - 4
    else:
        assert meta.loc[uncertain, "label"] == (1 if policy == "ones" else 0) and len(store) == 15
    assert meta.loc["train/patient00001/study1/view1_frontal.jpg", "label"] == 1
    assert meta.loc["train/patient00002/study1/view2_frontal.jpg", "label"] == 0  # blank -> 0
    assert meta.loc["valid/patient00008/study1/view2_frontal.jpg", "official_split"] == "valid"
    assert meta.loc["train/patient00001/study1/view2_frontal.jpg", "sex"] == "F"
    assert_patient_level(store)
    assert np.abs(image_of(store, "train/patient00003/study1/view1_frontal.jpg").astype(int) - 40).max() <= 2


def test_chexpert_reference_filter_keeps_pa_only(tmp_path):
    store = prepare(chexpert_root(tmp_path), tmp_path / "out", "chexpert")
    assert store.domains == ["PA"] and (store.meta["view"] == "PA").all() and len(store) == 9


def findings_of(store: ImageStore, image_id: str) -> list[float]:
    row = store.meta.index[store.meta["image_id"] == image_id]
    return store.finding_matrix(row)[0].tolist()


@pytest.mark.parametrize("policy, uncertain", [("zeros", 0.0), ("ones", 1.0), ("ignore", np.nan)])
def test_chexpert_findings_with_each_uncertainty_policy(tmp_path, policy, uncertain):
    options = {"views": ["AP", "PA"], "findings": ["Pneumonia", "Edema"], "uncertain": policy}
    store = prepare(chexpert_root(tmp_path), tmp_path / "out", "chexpert", chexpert=options)
    assert store.findings == ["Pneumonia", "Edema"] and store.labels == ["negative", "any finding"]
    assert len(store) == 15  # uncertain findings are masked, never a reason to leave an image out
    both_uncertain = "train/patient00002/study1/view1_frontal.jpg"  # i = 2: Pneumonia -1, Edema -1
    np.testing.assert_array_equal(findings_of(store, both_uncertain), [uncertain, uncertain])
    assert findings_of(store, "train/patient00001/study1/view1_frontal.jpg") == [1.0, 0.0]
    assert findings_of(store, "train/patient00002/study1/view2_frontal.jpg") == [0.0, 1.0]  # blank Pneumonia -> 0
    assert findings_of(store, "train/patient00001/study1/view2_frontal.jpg") == [0.0, 0.0]
    label = store.meta.set_index("image_id")["label"]  # any finding: some finding is 1 (a masked one is not)
    assert label[both_uncertain] == (1 if policy == "ones" else 0)
    assert label["train/patient00001/study1/view2_frontal.jpg"] == 0
    assert label["train/patient00002/study1/view2_frontal.jpg"] == 1
    assert (label.to_numpy() == (store.finding_matrix() == 1).any(axis=1)).all()
    report = pd.read_json(tmp_path / "out/prepare_report.json", typ="series")
    assert report["findings"]["Edema"] == {
        "present": 4 + (4 if policy == "ones" else 0),
        "absent": 7 + (4 if policy == "zeros" else 0),
        "missing": 4 if policy == "ignore" else 0,
    }
    assert_patient_level(store)


def test_chexpert_bad_findings_are_named_before_any_image_is_written(tmp_path, capsys):
    root = chexpert_root(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"train.csv lacks column\(s\) 'Oedema'"):
        prepare(root, out, "chexpert", chexpert={"findings": ["Edema", "Oedema"]})
    table = pd.read_csv(root / "valid.csv")
    table["Edema"] = table["Edema"].astype(object)
    table.loc[1, "Edema"] = "2"
    table.to_csv(root / "valid.csv", index=False)
    with pytest.raises(
        DatasetError, match=r"valid.csv: column 'Edema' holds 2\.0 in row 3; expected 1, 0, -1 \(uncertain\) or blank"
    ):
        prepare(root, out, "chexpert", chexpert={"findings": ["Edema"]})
    table.loc[1, "Edema"] = "yes"
    table.to_csv(root / "valid.csv", index=False)
    with pytest.raises(DatasetError, match=r"valid.csv: column 'Edema' holds 'yes' in row 3"):
        prepare(root, out, "chexpert", chexpert={"findings": ["Edema"]})
    assert not (out / "store.json").exists() and not (out / "images.npy.partial").exists()
    argv = ["data", "prepare", "--dataset", "chexpert", "--root", str(root), "--out", str(tmp_path / "cli")]
    assert main([*argv, "--set", "chexpert.uncertain=maybe"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'chexpert.uncertain'" in error and "'zeros', 'ones' or 'ignore'" in error
    assert main([*argv, "--set", "chexpert.findings=[Edema, Edema]"]) == 2
    assert "findings must be distinct, ['Edema'] repeated" in capsys.readouterr().err


# ----------------------------------------------------------------------------- RSNA


def rsna_root(tmp_path: Path) -> Path:
    root = tmp_path / "rsna"
    boxes, classes = [], []
    for i in range(10):
        pid = f"{i:04x}-rsna"
        target = int(i % 3 == 0)
        for _ in range(2 if target else 1):
            boxes.append(
                {
                    "patientId": pid,
                    "x": 10.0 if target else np.nan,
                    "y": 20.0 if target else np.nan,
                    "width": 5.0 if target else np.nan,
                    "height": 5.0 if target else np.nan,
                    "Target": target,
                }
            )
        classes.append({"patientId": pid, "class": "Lung Opacity" if target else "Normal"})
        stored = np.full((32, 32), 10 * i, dtype=np.uint8)
        stored[:, :16] = 200
        write_dicom(
            root / "stage_2_train_images" / f"{pid}.dcm",
            stored,
            8,
            PatientSex="F" if i % 2 else "M",
            PatientAge=str(30 + i),
            ViewPosition="AP" if i < 6 else "PA",
            Modality="CR",
        )
    pd.DataFrame(boxes).to_csv(root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(classes).to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    return root


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")  # RSNA writes PatientAge as '51', as here
def test_rsna_label_from_boxes_and_attributes_from_dicom_headers(tmp_path):
    store = prepare(rsna_root(tmp_path), tmp_path / "out", "rsna")
    meta = store.meta.set_index("image_id")
    assert len(store) == 10 and store.domains == ["AP", "PA"]
    assert meta.loc["0003-rsna", "label"] == 1 and meta.loc["0004-rsna", "label"] == 0
    assert meta.loc["0003-rsna", "sex"] == "F" and meta.loc["0003-rsna", "age"] == 33
    assert meta.loc["0007-rsna", "domain"] == 1 and meta.loc["0003-rsna", "class"] == "Lung Opacity"
    image = image_of(store, "0004-rsna")
    assert (image[:, :7] == 200).all() and (image[:, 9:] == 40).all()


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")
def test_rsna_unreadable_header_is_named_or_skipped(tmp_path):
    root = rsna_root(tmp_path)
    (root / "stage_2_train_images/0002-rsna.dcm").unlink()
    with pytest.raises(DatasetError, match="0002-rsna.dcm"):
        prepare(root, tmp_path / "out", "rsna")
    store = prepare(root, tmp_path / "out", "rsna", skip_bad=True)
    assert len(store) == 9 and "0002-rsna" not in set(store.meta["image_id"])
    bad = pd.read_csv(tmp_path / "out/bad_rows.csv")
    assert list(bad["image_id"]) == ["0002-rsna"] and list(bad["kind"]) == ["missing file"]


# ----------------------------------------------------------------------------- EMBED

EMBED_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"


def mammogram(breast_on_left: bool, value: int = 3000) -> np.ndarray:
    stored = np.zeros((40, 32), dtype=np.uint16)
    stored[8:32, :14] = value
    stored[2:4, 26:30] = 4000  # burned-in marker away from the breast
    return stored if breast_on_left else stored[:, ::-1].copy()


def embed_root(tmp_path: Path) -> Path:
    root = tmp_path / "embed"
    meta, clinical = [], []
    models = ["Selenia Dimensions", "Senographe Essential", "Lorad Selenia"]
    for i in range(12):
        empi, acc = f"{100 + i // 2}", f"{5000 + i}"
        side = "R" if i % 2 else "L"
        rel = f"cohort_1/{empi}/{acc}/1.2.3.{i}.dcm"
        meta.append(
            {
                "empi_anon": empi,
                "acc_anon": acc,
                "anon_dicom_path": EMBED_PREFIX + rel,
                "FinalImageType": "cview" if i == 11 else "2D",
                "ManufacturerModelName": models[i % 3],
                "ViewPosition": "CC",
                "ImageLateralityFinal": side,
                "Manufacturer": "HOLOGIC, Inc.",
            }
        )
        density = [1, 2, 3, 4, 5, np.nan][i % 6] if i < 6 else 1 + i % 4
        clinical.append(
            {
                "empi_anon": empi,
                "acc_anon": acc,
                "tissueden": density,
                "age_at_study": 50.5 + i,
                "side": side,
                "GENDER_DESC": "Female",
            }
        )
        clinical.append(
            {
                "empi_anon": empi,
                "acc_anon": acc,
                "tissueden": density,
                "age_at_study": 50.5 + i,
                "side": "B",
                "GENDER_DESC": "Female",
            }
        )
        photometric = "MONOCHROME1" if i == 7 else "MONOCHROME2"
        stored = mammogram(side == "L")
        if photometric == "MONOCHROME1":
            stored = (4095 - stored).astype(np.uint16)
        write_dicom(
            root / rel,
            stored,
            12,
            PhotometricInterpretation=photometric,
            ImageLaterality=side,
            WindowCenter=2048,
            WindowWidth=4096,
        )
    (root / "tables").mkdir()
    pd.DataFrame(meta).to_csv(root / "tables/EMBED_OpenData_metadata.csv", index=False)
    pd.DataFrame(clinical).to_csv(root / "tables/EMBED_OpenData_clinical.csv", index=False)
    return root


def test_embed_2d_only_density_scanner_and_breast_orientation(tmp_path):
    store = prepare(embed_root(tmp_path), tmp_path / "out", "embed")
    meta = store.meta.set_index("image_id")
    # dropped: i=4 (tissueden 5), i=5 (unknown density), i=11 (C-view)
    assert sorted(meta.index) == sorted(f"1.2.3.{i}" for i in [0, 1, 2, 3, 6, 7, 8, 9, 10])
    assert store.labels == ["A", "B", "C", "D"]
    assert store.domains == ["Lorad Selenia", "Selenia Dimensions", "Senographe Essential"]
    assert meta.loc["1.2.3.2", "label"] == 2 and meta.loc["1.2.3.6", "label"] == 2 and meta.loc["1.2.3.7", "label"] == 3
    assert meta.loc["1.2.3.1", "domain_name"] == "Senographe Essential" and meta.loc["1.2.3.1", "age"] == 51.5
    reference = image_of(store, "1.2.3.0")
    assert reference[3:13, :6].min() > 150 and reference[:, 9:].max() == 0  # breast kept, marker masked
    for image_id in ["1.2.3.1", "1.2.3.7"]:  # right breasts (one MONOCHROME1) come out like the left one
        assert np.abs(image_of(store, image_id).astype(int) - reference).max() <= 1
    assert_patient_level(store)
    report = pd.read_json(tmp_path / "out/prepare_report.json", typ="series")
    assert report["filtered"] == {"FinalImageType not in ['2D']": 1, "density unknown or 5 (male / not assessed)": 2}


# ----------------------------------------------------------------------------- VinDr-Mammo


def vindr_root(tmp_path: Path) -> Path:
    root = tmp_path / "vindr"
    notes, meta = [], []
    models = ["Mammomat Inspiration", "Planmed Nuance"]
    for i in range(8):
        study, image = f"study{i // 2}", f"img{i:03d}"
        side = "R" if i % 2 else "L"
        notes.append(
            {
                "study_id": study,
                "series_id": f"ser{i}",
                "image_id": image,
                "laterality": side,
                "view_position": "MLO",
                "height": 40,
                "width": 32,
                "breast_birads": "BI-RADS 1",
                "breast_density": f"DENSITY {'ABCD'[i % 4]}",
                "split": "test" if i >= 6 else "training",
            }
        )
        meta.append(
            {
                "Series Instance UID": f"ser{i}",
                "SOP Instance UID": image,
                "Patient's Age": f"{40 + i:03d}Y",
                "View Position": "MLO",
                "Image Laterality": side,
                "Photometric Interpretation": "MONOCHROME2",
                "Manufacturer": "SIEMENS" if i % 2 == 0 else "Planmed",
                "Manufacturer's Model Name": models[i % 2],
            }
        )
        write_dicom(root / "images" / study / f"{image}.dicom", mammogram(side == "L"), 12)
    pd.DataFrame(notes).to_csv(root / "breast-level_annotations.csv", index=False)
    pd.DataFrame(meta).to_csv(root / "metadata.csv", index=False)
    return root


def test_vindr_density_model_domain_and_ood(tmp_path):
    store = prepare(vindr_root(tmp_path), tmp_path / "out", "vindr", ood_domains=["Planmed Nuance"], test_fraction=0.5)
    meta = store.meta.set_index("image_id")
    assert len(store) == 8 and store.domains == ["Mammomat Inspiration", "Planmed Nuance"]
    assert [meta.loc[f"img00{i}", "label"] for i in range(4)] == [0, 1, 2, 3]
    assert meta.loc["img005", "age"] == 45 and meta.loc["img006", "official_split"] == "test"
    assert set(meta.loc[meta["domain"] == 1, "split"]) <= {"ood_train", "ood_test"}
    assert np.abs(image_of(store, "img001").astype(int) - image_of(store, "img000")).max() <= 1


# ----------------------------------------------------------------------------- MIMIC-CXR-JPG

MIMIC_FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def mimic_root(tmp_path: Path) -> Path:
    """Eight studies of four subjects, two images each (one frontal, one lateral, except study 7: two
    frontal); study 6 has no labeller row. The split table is gzipped, as PhysioNet serves it."""
    root = tmp_path / "mimic-cxr-jpg"
    meta, labels, split = [], [], []
    for study_no in range(8):
        subject, study = f"1{study_no // 2}000032", f"5{study_no:07d}"
        views = ["AP", "PA"] if study_no == 7 else ["PA" if study_no % 2 else "AP", "LATERAL"]
        for view_no, view in enumerate(views):
            dicom = f"d{study_no}{view_no}-abc"
            procedure = "CHEST (PORTABLE AP)" if view == "AP" else "CHEST (PA AND LAT)"
            meta.append(
                {
                    "dicom_id": dicom,
                    "subject_id": subject,
                    "study_id": study,
                    "PerformedProcedureStepDescription": procedure,
                    "ViewPosition": view,
                    "Rows": 16,
                    "Columns": 20,
                    "StudyDate": 21800506,
                    "StudyTime": 213014.531,
                }
            )
            split.append(
                {
                    "dicom_id": dicom,
                    "study_id": study,
                    "subject_id": subject,
                    "split": "test" if study_no >= 6 else "validate" if study_no >= 4 else "train",
                }
            )
            folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("L", (20, 16), 20 * study_no + 5 * view_no).save(folder / f"{dicom}.jpg", quality=95)
        if study_no != 6:
            cycle = [1.0, 0.0, -1.0, np.nan]
            labels.append(
                {
                    "subject_id": subject,
                    "study_id": study,
                    "No Finding": np.nan,
                    **{name: cycle[(study_no + k) % 4] for k, name in enumerate(MIMIC_FINDINGS)},
                }
            )
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    pd.DataFrame(labels).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    return root


@pytest.mark.parametrize("policy, uncertain", [("ones", 1.0), ("ignore", np.nan)])
def test_mimic_study_findings_frontal_views_official_split_and_pixels(tmp_path, policy, uncertain):
    store = prepare(mimic_root(tmp_path), tmp_path / "out", "mimic", mimic={"uncertain": policy})
    meta = store.meta.set_index("image_id")
    # frontal images of the labelled studies: studies 0-5 one each, study 7 two; study 6 has no labels
    assert sorted(meta.index) == [
        "d00-abc",
        "d10-abc",
        "d20-abc",
        "d30-abc",
        "d40-abc",
        "d50-abc",
        "d70-abc",
        "d71-abc",
    ]
    assert store.findings == MIMIC_FINDINGS and store.domains == ["AP", "PA"]
    assert str(meta.loc["d30-abc", "patient_id"]) == "11000032" and meta.loc["d30-abc", "domain_name"] == "PA"
    assert str(meta.loc["d30-abc", "study_id"]) == "50000003"
    # study 2: Atelectasis -1, Cardiomegaly blank, Consolidation 1, Edema 0, Pleural Effusion -1
    np.testing.assert_array_equal(findings_of(store, "d20-abc"), [uncertain, 0.0, 1.0, 0.0, uncertain])
    np.testing.assert_array_equal(
        store.finding_matrix(meta.index.get_indexer(["d70-abc", "d71-abc"])), [[0.0, 1.0, 0.0, uncertain, 0.0]] * 2
    )  # both images of study 7
    assert (
        set(meta.loc[["d70-abc", "d71-abc"], "official_split"]) == {"test"}
        and meta.loc["d00-abc", "official_split"] == "train"
    )
    assert_patient_level(store)
    assert np.abs(image_of(store, "d71-abc").astype(int) - 145).max() <= 2
    report = pd.read_json(tmp_path / "out/prepare_report.json", typ="series")
    assert report["filtered"] == {"ViewPosition not in ['PA', 'AP']": 7, "study not in mimic-cxr-2.0.0-chexpert.csv": 1}


def test_mimic_domain_column_and_bad_labeller_values(tmp_path):
    root = mimic_root(tmp_path)
    store = prepare(root, tmp_path / "out", "mimic", mimic={"domain_column": "PerformedProcedureStepDescription"})
    assert store.domains == ["CHEST (PA AND LAT)", "CHEST (PORTABLE AP)"] and len(store) == 8
    labels = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    with pytest.raises(DatasetError, match=r"mimic-cxr-2.0.0-chexpert.csv lacks column\(s\) 'Fracture'"):
        prepare(root, tmp_path / "out2", "mimic", mimic={"findings": ["Edema", "Fracture"]})
    labels.loc[4, "Edema"] = -2
    labels.to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    with pytest.raises(
        DatasetError, match=r"mimic-cxr-2.0.0-chexpert.csv: column 'Edema' holds -2\.0 in row 6; expected 1, 0, -1"
    ):
        prepare(root, tmp_path / "out2", "mimic")
    assert not (tmp_path / "out2/images.npy.partial").exists()


# ----------------------------------------------------------------------------- NIH ChestX-ray14

NIH_LABELS = [
    "Cardiomegaly|Effusion",
    "No Finding",
    "Atelectasis",
    "Effusion|Infiltration|Mass",
    "No Finding",
    "Hernia",
]


def nih_root(tmp_path: Path) -> Path:
    """Twelve images of five patients in two archives' folders (``images_001/images``, ``images_002/images``)."""
    root = tmp_path / "nih"
    rows = []
    for i in range(12):
        patient = i // 3 + 1 if i < 9 else 5
        name = f"{patient:08d}_{i % 3:03d}.png" if i < 9 else f"{patient:08d}_{i - 9:03d}.png"
        folder = root / f"images_00{1 + i // 6}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((24, 24), 15 * i, dtype=np.uint8)).save(folder / name)
        rows.append(
            {
                "Image Index": name,
                "Finding Labels": NIH_LABELS[i % 6],
                "Follow-up #": i % 3,
                "Patient ID": patient,
                "Patient Age": 30 + i,
                "Patient Gender": "F" if i % 2 else "M",
                "View Position": "AP" if i % 4 == 0 else "PA",
                "OriginalImage[Width": 2500,
                "Height]": 2048,
                "OriginalImagePixelSpacing[x": 0.14,
                "y]": 0.14,
                "Unnamed: 11": np.nan,
            }
        )
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017.csv", index=False)
    names = [r["Image Index"] for r in rows]
    (root / "train_val_list.txt").write_text("\n".join(names[:9]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[9:]) + "\n")
    return root


def test_nih_findings_from_finding_labels_official_lists_and_images_in_every_archive(tmp_path):
    findings = ["Cardiomegaly", "Effusion", "Hernia", "Pneumothorax"]
    store = prepare(nih_root(tmp_path), tmp_path / "out", "nih", nih={"findings": findings})
    meta = store.meta.set_index("image_id")
    assert len(store) == 12 and store.findings == findings and store.domains == ["AP", "PA"]
    expected = {
        "Cardiomegaly|Effusion": [1, 1, 0, 0],
        "No Finding": [0, 0, 0, 0],
        "Atelectasis": [0, 0, 0, 0],
        "Effusion|Infiltration|Mass": [0, 1, 0, 0],
        "Hernia": [0, 0, 1, 0],
    }
    for i, name in enumerate(store.meta["image_id"]):
        position = int(store.meta["age"].iat[i]) - 30  # the row of Data_Entry_2017.csv
        assert findings_of(store, name) == expected[NIH_LABELS[position % 6]], name
    assert not np.isnan(store.finding_matrix()).any()  # ChestX-ray14 has no uncertain labels
    assert list(meta.loc[["00000002_000.png", "00000002_001.png"], "label"]) == [1, 0]  # Effusion / No Finding
    assert (
        meta.loc["00000005_000.png", "official_split"] == "test"
        and meta.loc["00000001_002.png", "official_split"] == "train_val"
    )
    assert str(meta.loc["00000002_000.png", "patient_id"]) == "2" and meta.loc["00000002_000.png", "sex"] == "F"
    assert meta.loc["00000002_000.png", "domain_name"] == "PA" and meta.loc["00000002_001.png", "domain_name"] == "AP"
    assert_patient_level(store)
    assert (image_of(store, "00000005_002.png") == 165).all() and (image_of(store, "00000001_000.png") == 0).all()
    assert prepare(nih_root(tmp_path / "all"), tmp_path / "all_out", "nih").findings[-1] == "Pneumothorax"


def test_nih_bad_labels_findings_and_lists_are_named(tmp_path):
    root = nih_root(tmp_path)
    with pytest.raises(DatasetError, match=r"Data_Entry_2017.csv: column 'Finding Labels' has no finding 'Effusions'"):
        prepare(root, tmp_path / "out", "nih", nih={"findings": ["Effusions"]})
    (root / "test_list.txt").unlink()
    with pytest.raises(DatasetError, match=r"official split list .*test_list.txt does not exist \(nih.test_list"):
        prepare(root, tmp_path / "out", "nih")
    assert len(prepare(root, tmp_path / "out", "nih", nih={"test_list": ""})) == 12
    table = pd.read_csv(root / "Data_Entry_2017.csv")
    table.loc[4, "Finding Labels"] = "Effusion|Pneumonitis"
    table.to_csv(root / "Data_Entry_2017.csv", index=False)
    with pytest.raises(
        DatasetError, match=r"Data_Entry_2017.csv: column 'Finding Labels' holds 'Pneumonitis' in row 6"
    ):
        prepare(root, tmp_path / "out2", "nih")
    assert not (tmp_path / "out2/images.npy.partial").exists()


# ----------------------------------------------------------------------------- official splits

# each dataset's official split values -> the store splits they may become (train_val: split by patient)
OFFICIAL = {
    "chexpert": {"train": {"train", "val"}, "valid": {"test"}},
    "mimic": {"train": {"train"}, "validate": {"val"}, "test": {"test"}},
    "nih": {"train_val": {"train", "val"}, "test": {"test"}},
    "vindr": {"training": {"train", "val"}, "test": {"test"}},
}
ROOTS = {"chexpert": chexpert_root, "mimic": mimic_root, "nih": nih_root, "vindr": vindr_root}


@pytest.mark.parametrize("dataset", sorted(OFFICIAL))
def test_official_split_keeps_the_published_test_set_and_draws_validation_patients_from_training(tmp_path, dataset):
    root = ROOTS[dataset](tmp_path)
    store = prepare(root, tmp_path / "out", dataset, split="official", val_fraction=0.4, test_fraction=0.0)
    meta = store.meta
    for official, splits in OFFICIAL[dataset].items():
        taken = set(meta.loc[meta["official_split"] == official, "split"])
        assert taken == splits, (official, taken)
    assert_patient_level(store)
    pooled = meta.loc[meta["split"].isin(["train", "val"]), "patient_id"].nunique()  # test_fraction is not used
    if dataset != "mimic":  # MIMIC publishes its validation set; the others' is val_fraction of the training patients
        assert meta.loc[meta["split"] == "val", "patient_id"].nunique() == round(0.4 * pooled)


def test_official_split_puts_an_ood_domain_of_the_official_test_set_in_ood_test(tmp_path):
    store = prepare(vindr_root(tmp_path), tmp_path / "out", "vindr", split="official", ood_domains=["Planmed Nuance"])
    split = store.meta.set_index("image_id")["split"]
    assert split["img006"] == "test" and split["img007"] == "ood_test"  # study 3: the official test set
    assert set(split[[f"img00{i}" for i in (1, 3, 5)]]) == {"ood_train"}


def test_a_patient_in_two_official_splits_is_named_before_any_image_is_written(tmp_path):
    root = chexpert_root(tmp_path)
    valid = pd.read_csv(root / "valid.csv")
    valid.loc[0, "Path"] = "CheXpert-v1.0-small/valid/patient00001/study2/view1_frontal.jpg"
    valid.to_csv(root / "valid.csv", index=False)
    with pytest.raises(
        DatasetError,
        match=r"train.csv / .*valid.csv: patient patient00001 is in official splits \['train', 'valid'\] "
        r"\(1 patient\(s\) in more than one\)",
    ):
        prepare(root, tmp_path / "out", "chexpert", chexpert={"views": ["AP", "PA"]}, split="official")
    assert not (tmp_path / "out/store.json").exists() and not (tmp_path / "out/images.npy.partial").exists()
    root = mimic_root(tmp_path)
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    split.loc[split["dicom_id"] == "d00-abc", "split"] = "test"
    split.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    with pytest.raises(DatasetError, match=r"split.csv.gz: patient 10000032 is in official splits \['test', 'train'\]"):
        prepare(root, tmp_path / "out", "mimic", split="official")


def test_an_image_in_no_official_split_is_named(tmp_path):
    root = nih_root(tmp_path)
    with pytest.raises(
        DatasetError,
        match=r"train_val_list.txt: image 00000005_000.png has no official split \(3 image\(s\) without one of "
        r"\['test', 'train_val'\]\); split: official needs every image in one",
    ):
        prepare(root, tmp_path / "out", "nih", nih={"test_list": ""}, split="official")
    notes = pd.read_csv(vindr_root(tmp_path) / "breast-level_annotations.csv")
    notes.loc[2, "split"] = "validation"
    notes.to_csv(tmp_path / "vindr/breast-level_annotations.csv", index=False)
    with pytest.raises(
        DatasetError, match=r"annotations.csv column 'split': image img002 has official split 'validation'"
    ):
        prepare(tmp_path / "vindr", tmp_path / "out", "vindr", split="official")


def test_official_split_of_a_dataset_without_one_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"dataset 'padchest' publishes no official split \(datasets with one: "):
        prepare(padchest_root(tmp_path), tmp_path / "out", "padchest", split="official")
    assert not (tmp_path / "out").exists()
    argv = ["data", "prepare", "--dataset", "csv", "--root", str(csv_root(tmp_path)), "--out", str(tmp_path / "cli")]
    assert main([*argv, "--set", "split=official"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "dataset 'csv' publishes no official split" in error and "chexpert" in error
    assert not (tmp_path / "cli").exists()


# ----------------------------------------------------------------------------- generic CSV and bad input


def test_csv_adapter_uses_the_named_columns(tmp_path):
    store = prepare(csv_root(tmp_path), tmp_path / "out", "csv", csv=CSV_OPTIONS, seed=3)
    meta = store.meta.set_index("image_id")
    assert store.domains == ["a", "b", "c"] and store.labels == ["no", "yes"]
    assert meta.loc["5.png", "label"] == 1 and meta.loc["5.png", "domain"] == 2 and meta.loc["5.png", "age"] == 25
    assert (meta["site"] == "x").all() and meta.loc["5.png", "path"] == "imgs/5.png"
    assert (image_of(store, "7.png") == 70).all()
    assert_patient_level(store)


def test_unknown_domain_value_is_an_error_naming_value_and_column(tmp_path):
    root = csv_root(tmp_path)
    with pytest.raises(DatasetError, match=r"column 'scanner' holds value\(s\) \['c'\]"):
        prepare(root, tmp_path / "out", "csv", csv=CSV_OPTIONS, domains=["a", "b"])
    store = prepare(root, tmp_path / "out2", "csv", csv=CSV_OPTIONS, domains=["b", "a"], other_domains="drop")
    assert store.domains == ["b", "a"] and len(store) == 8
    with pytest.raises(ConfigError, match="ood_domains"):
        prepare(root, tmp_path / "out3", "csv", csv=CSV_OPTIONS, ood_domains=["z"])


def test_csv_empty_cell_is_named(tmp_path):
    root = csv_root(tmp_path)
    table = pd.read_csv(root / "table.csv", dtype=str)
    table.loc[4, "subject"] = ""
    table.to_csv(root / "table.csv", index=False)
    with pytest.raises(DatasetError, match="column 'subject' is empty in row 6"):
        prepare(root, tmp_path / "out", "csv", csv=CSV_OPTIONS)


def test_prepare_presets_are_valid():
    from cfcl.config import build_config
    from cfcl.presets import preset_names, resolve_config_path

    names = [name for name in preset_names("stage") if name.startswith("prepare_")]
    assert {
        "prepare_padchest",
        "prepare_chexpert",
        "prepare_rsna",
        "prepare_embed",
        "prepare_vindr",
        "prepare_chexpert5",
        "prepare_mimic",
        "prepare_nih",
    } <= set(names)
    for name in names:
        config = build_config(PrepareConfig, resolve_config_path(name))
        assert name.startswith(f"prepare_{config.dataset}")
    chexpert5 = build_config(PrepareConfig, resolve_config_path("prepare_chexpert5")).chexpert
    assert chexpert5.findings == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def test_missing_and_corrupt_images_error_or_are_skipped_with_a_report(tmp_path):
    root = csv_root(tmp_path)
    (root / "imgs/3.png").unlink()
    (root / "imgs/8.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="imgs/3.png"):
        prepare(root, tmp_path / "out", "csv", csv=CSV_OPTIONS)
    assert not (tmp_path / "out/store.json").exists()
    (root / "imgs/3.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="imgs/3.png: not a readable PNG/JPEG image"):
        prepare(root, tmp_path / "out", "csv", csv=CSV_OPTIONS, chunk=4)
    (root / "imgs/3.png").unlink()
    store = prepare(root, tmp_path / "out", "csv", csv=CSV_OPTIONS, skip_bad=True, chunk=5)
    assert len(store) == 10 and not {"3.png", "8.png"} & set(store.meta["image_id"])
    assert list(store.meta["index"]) == list(range(10)) and (image_of(store, "9.png") == 90).all()
    bad = pd.read_csv(tmp_path / "out/bad_rows.csv")
    assert dict(zip(bad["image_id"], bad["kind"])) == {"3.png": "missing file", "8.png": "unreadable or corrupt image"}
    report = pd.read_json(tmp_path / "out/prepare_report.json", typ="series")
    assert report["skipped"] == {"missing file": 1, "unreadable or corrupt image": 1} and report["images"] == 10
    assert not (tmp_path / "out/.prepare-bad").exists() and not (tmp_path / "out/images.npy.partial").exists()


def test_a_killed_prepare_resumes_and_is_never_readable_half_written(tmp_path, monkeypatch):
    import cfcl.data.prepare as prepare_module

    root = csv_root(tmp_path, n=20)
    complete = prepare(root, tmp_path / "ref", "csv", csv=CSV_OPTIONS, chunk=4)
    real = prepare_module.decode_chunk
    calls = []

    def dies_after_two(paths, *args):
        calls.append(paths[0])
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(paths, *args)

    monkeypatch.setattr(prepare_module, "decode_chunk", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, tmp_path / "out", "csv", csv=CSV_OPTIONS, chunk=4)
    with pytest.raises(StoreError, match="incomplete"):
        ImageStore.open(tmp_path / "out")
    calls.clear()
    monkeypatch.setattr(prepare_module, "decode_chunk", lambda paths, *a: calls.append(paths[0]) or real(paths, *a))
    resumed = prepare(root, tmp_path / "out", "csv", csv=CSV_OPTIONS, chunk=4)
    assert len(calls) == 3  # 5 chunks, 2 were done before the kill
    assert np.array_equal(np.asarray(resumed.images), np.asarray(complete.images))
    assert resumed.content_hash == complete.content_hash


def test_two_workers_give_the_same_store_as_one(tmp_path):
    root = csv_root(tmp_path)
    one = prepare(root, tmp_path / "one", "csv", csv=CSV_OPTIONS, chunk=3)
    two = prepare(root, tmp_path / "two", "csv", csv=CSV_OPTIONS, chunk=3, workers=2)
    assert one.content_hash == two.content_hash


def test_splits_are_seeded_and_patient_level():
    patients = pd.Series([f"p{i // 3}" for i in range(300)])
    first = assign_splits(patients, pd.Series([False] * 300), 7, 0.1, 0.2)
    assert first.equals(assign_splits(patients, pd.Series([False] * 300), 7, 0.1, 0.2))
    assert not first.equals(assign_splits(patients, pd.Series([False] * 300), 8, 0.1, 0.2))
    assert (pd.DataFrame({"p": patients, "s": first}).groupby("p")["s"].nunique() == 1).all()
    assert first.value_counts().to_dict() == {"train": 210, "test": 60, "val": 30}


def test_compressed_dicoms_are_decoded_and_one_without_a_decoder_is_skipped_with_its_reason(
    tmp_path, monkeypatch, capsys
):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

    root = csv_root(tmp_path)
    table = pd.read_csv(root / "table.csv")
    for i, syntax in [(4, RLELossless), (5, JPEG2000Lossless)]:
        (root / f"imgs/{i}.png").unlink()
        write_compressed(root / f"imgs/{i}.dcm", np.full((40, 40), 10 * i, dtype=np.uint8), 8, syntax)
    write_claiming(root / "imgs/7.dcm", JPEGLosslessSV1, b"\xff\xd8\xff\xd9")
    table["file"] = table["file"].replace({"4.png": "4.dcm", "5.png": "5.dcm", "7.png": "7.dcm"})
    table.to_csv(root / "table.csv", index=False)
    monkeypatch.setattr(get_decoder(JPEGLosslessSV1), "_available", {})
    options = [f"--set=csv.{k}={v}" for k, v in CSV_OPTIONS.items() if not isinstance(v, list)]
    argv = [
        "data",
        "prepare",
        "--dataset",
        "csv",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "out"),
        "--size",
        str(SIZE),
        "--workers",
        "1",
        *options,
    ]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "imgs/7.dcm: pixel data compressed as JPEG Lossless" in error
    assert error.endswith("pip install 'cfcl[dicom]'")
    assert main([*argv, "--skip-bad"]) == 0
    store = ImageStore.open(tmp_path / "out")
    assert len(store) == 11 and (image_of(store, "4.dcm") == 40).all() and (image_of(store, "5.dcm") == 50).all()
    bad = pd.read_csv(tmp_path / "out/bad_rows.csv")
    assert list(bad["image_id"]) == ["7.dcm"] and list(bad["kind"]) == ["no decoder for its compression"]
    assert bad["error"][0].endswith("pip install 'cfcl[dicom]'") and "1.2.840.10008.1.2.4.70" in bad["error"][0]


def test_cli_prepare_with_flags(tmp_path, capsys):
    root = csv_root(tmp_path)
    (root / "imgs/2.png").write_bytes(b"broken")
    options = [f"--set=csv.{k}={v}" for k, v in CSV_OPTIONS.items() if not isinstance(v, list)]
    argv = [
        "data",
        "prepare",
        "--dataset",
        "csv",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "out"),
        "--size",
        "[12, 8]",
        "--workers",
        "1",
        *options,
    ]
    assert main(argv) == 2 and "2.png" in capsys.readouterr().err
    assert main([*argv, "--skip-bad"]) == 0
    store = ImageStore.open(tmp_path / "out")
    assert store.size == (12, 8) and len(store) == 11
    assert main(["data", "prepare", "--dataset", "csv", "--out", str(tmp_path / "x")]) == 2
    assert "--root" in capsys.readouterr().err


def test_prepare_says_in_one_line_what_it_wrote_and_skipped(tmp_path, capsys):
    root = csv_root(tmp_path)
    (root / "imgs/4.png").write_bytes(b"broken")
    store = prepare(
        root, tmp_path / "out", "csv", csv=CSV_OPTIONS, skip_bad=True, domains=["a", "b"], other_domains="drop"
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("data: ")]
    assert len(lines) == 1 and re.match(rf"data: {re.escape(str(tmp_path / 'out'))} done in [\d.]+ s; ", lines[0])
    counts = store.meta.groupby(["split", "domain"]).size()
    per_split = "; ".join(
        f"{split}: " + ", ".join(f"{store.domains[d]} {n}" for d, n in counts[split].items())
        for split in ("train", "val", "test")
        if split in counts
    )
    # 12 rows, the 4 of scanner c filtered out, the unreadable 4.png (scanner b) skipped
    assert f"7 images written ({per_split}); 4 rows left out" in lines[0]
    assert f"1 skipped (missing or unreadable), listed in {tmp_path / 'out' / 'bad_rows.csv'}" in lines[0]


def test_a_missing_or_wrong_root_is_refused_before_anything_is_written(tmp_path, capsys):
    from cfcl.data.prepare import check
    from cfcl.errors import MissingKeyError

    with pytest.raises(
        MissingKeyError, match=r"'root' is not set: pass --set root=DIR \(the folder holding the dataset"
    ):
        check(PrepareConfig())
    (tmp_path / "file").write_text("")
    for root in (tmp_path / "nowhere", tmp_path / "file"):
        with pytest.raises(
            ConfigError, match=rf"dataset root {re.escape(str(root))} \(config key 'root'\) is not a folder"
        ):
            run(PrepareConfig(root=str(root)), tmp_path / "out")
    out = tmp_path / "cli"
    assert main(["data", "prepare", "--dataset", "csv", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config key 'root' is not set: pass --root DIR" in err
    assert main(["data", "prepare", "--dataset", "csv", "--root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out").exists()
