"""tidecv 1.0.1's computation (Bolya et al. 2020, https://github.com/dbolya/tide, MIT licence,
Copyright (c) 2020 Daniel Bolya), the oracle of ``detector.evaluation.errors``: its ``Data``, AP,
errors, ``TIDEExample``, ``TIDERun`` and the ``TIDE`` methods that give the main and special dAPs,
copied statement for statement from ``tidecv/{data,ap,quantify}.py`` and ``tidecv/errors/``, with
only what needs OpenCV, seaborn or pandas left out (plotting, ``Error.show``, qualifiers, the
downloads) and the COCO loaders reading dicts. Ported rather than installed: tidecv's requirements
pull in opencv-python, which overwrites the opencv-python-headless the package uses. The port gives
the installed tidecv's numbers exactly (checked once by hand, with tidecv and its requirements in a
separate folder; the report of the change that added it says how).
"""
# ruff: noqa
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils


# ---------------------------------------------------------------------------------- tidecv/data.py
class Data:
    def __init__(self, name: str, max_dets: int = 100):
        self.name = name
        self.max_dets = max_dets
        self.classes = {}
        self.annotations = []
        self.images = defaultdict(lambda: {"name": None, "anns": []})

    def _get_ignored_classes(self, image_id: int) -> set:
        anns = self.get(image_id)
        classes_in_image = set()
        ignored_classes = set()
        for ann in anns:
            if ann["ignore"]:
                if ann["class"] is not None and ann["bbox"] is None and ann["mask"] is None:
                    ignored_classes.add(ann["class"])
            else:
                classes_in_image.add(ann["class"])
        return ignored_classes.difference(classes_in_image)

    def _make_default_class(self, id: int):
        if id not in self.classes:
            self.classes[id] = "Class " + str(id)

    def _make_default_image(self, id: int):
        if self.images[id]["name"] is None:
            self.images[id]["name"] = "Image " + str(id)

    def _add(self, image_id, class_id, box=None, mask=None, score=1, ignore=False):
        self._make_default_class(class_id)
        self._make_default_image(image_id)
        new_id = len(self.annotations)
        self.annotations.append({
            "_id": new_id, "score": score, "image": image_id, "class": class_id, "bbox": box, "mask": mask,
            "ignore": ignore,
        })
        self.images[image_id]["anns"].append(new_id)

    def add_ground_truth(self, image_id, class_id, box=None, mask=None):
        self._add(image_id, class_id, box, mask)

    def add_detection(self, image_id, class_id, score, box=None, mask=None):
        self._add(image_id, class_id, box, mask, score=score)

    def add_ignore_region(self, image_id, class_id=None, box=None, mask=None):
        self._add(image_id, class_id, box, mask, ignore=True)

    def add_class(self, id, name):
        self.classes[id] = name

    def add_image(self, id, name):
        self.images[id]["name"] = name

    def get(self, image_id):
        return [self.annotations[x] for x in self.images[image_id]["anns"]]


# ------------------------------------------------------------------------------ tidecv/datasets.py
def COCO(cocojson: dict, name: str = "gt") -> Data:
    """datasets.COCO on a loaded dict (bbox mode: the mask is not built)."""
    data = Data(name, max_dets=100)
    for image in cocojson["images"]:
        data.add_image(image["id"], image["file_name"])
    for cat in cocojson.get("categories", []):
        data.add_class(cat["id"], cat["name"])
    for ann in cocojson["annotations"]:
        if ann["iscrowd"]:
            data.add_ignore_region(ann["image_id"], ann["category_id"], ann["bbox"], None)
        else:
            data.add_ground_truth(ann["image_id"], ann["category_id"], ann["bbox"], None)
    return data


def COCOResult(dets: list, name: str = "dets") -> Data:
    data = Data(name)
    for det in dets:
        data.add_detection(det["image_id"], det["category_id"], det["score"], det.get("bbox"), det.get("segmentation"))
    return data


# ---------------------------------------------------------------------------------- tidecv/ap.py
class APDataObject:
    def __init__(self):
        self.data_points = {}
        self.false_negatives = set()
        self.num_gt_positives = 0
        self.curve = None

    def push(self, id, score, is_true, info={}):
        self.data_points[id] = (score, is_true, info)

    def push_false_negative(self, id):
        self.false_negatives.add(id)

    def add_gt_positives(self, num_positives):
        self.num_gt_positives += num_positives

    def is_empty(self):
        return len(self.data_points) == 0 and self.num_gt_positives == 0

    def get_ap(self):
        if self.num_gt_positives == 0:
            return 0
        data_points = list(self.data_points.values())
        data_points.sort(key=lambda x: -x[0])
        precisions = []
        recalls = []
        num_true = 0
        num_false = 0
        for datum in data_points:
            if datum[1]:
                num_true += 1
            else:
                num_false += 1
            precision = num_true / (num_true + num_false)
            recall = num_true / self.num_gt_positives
            precisions.append(precision)
            recalls.append(recall)
        for i in range(len(precisions) - 1, 0, -1):
            if precisions[i] > precisions[i - 1]:
                precisions[i - 1] = precisions[i]
        resolution = 100
        y_range = [0] * (resolution + 1)
        x_range = np.array([x / resolution for x in range(resolution + 1)])
        recalls = np.array(recalls)
        indices = np.searchsorted(recalls, x_range, side="left")
        for bar_idx, precision_idx in enumerate(indices):
            if precision_idx < len(precisions):
                y_range[bar_idx] = precisions[precision_idx]
        self.curve = (x_range, y_range)
        return sum(y_range) / len(y_range) * 100


class ClassedAPDataObject:
    def __init__(self):
        self.objs = defaultdict(lambda: APDataObject())

    def push(self, class_, id, score, is_true, info={}):
        self.objs[class_].push(id, score, is_true, info)

    def push_false_negative(self, class_, id):
        self.objs[class_].push_false_negative(id)

    def add_gt_positives(self, class_, num_positives):
        self.objs[class_].add_gt_positives(num_positives)

    def get_mAP(self):
        aps = [x.get_ap() for x in self.objs.values() if not x.is_empty()]
        return sum(aps) / len(aps)

    def get_gt_positives(self):
        return {k: v.num_gt_positives for k, v in self.objs.items()}


# ------------------------------------------------------------------------- tidecv/errors/error.py
def nonepack(t):
    if t is None:
        return None, None
    else:
        return t


class Error:
    def fix(self):
        raise NotImplementedError

    def unfix(self):
        if hasattr(self, "pred"):
            if self.pred["used"] is None:
                return None
            else:
                return self.pred["class"], (self.pred["score"], False, self.pred["info"])
        else:
            return None

    def get_id(self):
        if hasattr(self, "pred"):
            return self.pred["_id"]
        elif hasattr(self, "gt"):
            return self.gt["_id"]
        else:
            return -1


class BestGTMatch:
    def __init__(self, pred, gt):
        self.pred = pred
        self.gt = gt
        if self.gt["used"]:
            self.suppress = True
        else:
            self.suppress = False
            self.gt["usable"] = True
            score = self.pred["score"]
            if not "best_score" in self.gt:
                self.gt["best_score"] = -1
            if self.gt["best_score"] < score:
                self.gt["best_score"] = score
                self.gt["best_id"] = self.pred["_id"]

    def fix(self):
        if self.suppress or self.gt["best_id"] != self.pred["_id"]:
            return None
        else:
            return (self.pred["score"], True, self.pred["info"])


# ------------------------------------------------------------------- tidecv/errors/main_errors.py
class ClassError(Error):
    short_name = "Cls"

    def __init__(self, pred, gt, ex):
        self.pred = pred
        self.gt = gt
        self.match = BestGTMatch(pred, gt) if not self.gt["used"] else None

    def fix(self):
        if self.match is None:
            return None
        return self.gt["class"], self.match.fix()


class BoxError(Error):
    short_name = "Loc"

    def __init__(self, pred, gt, ex):
        self.pred = pred
        self.gt = gt
        self.match = BestGTMatch(pred, gt) if not self.gt["used"] else None

    def fix(self):
        if self.match is None:
            return None
        return self.pred["class"], self.match.fix()


class DuplicateError(Error):
    short_name = "Dupe"

    def __init__(self, pred, suppressor):
        self.pred = pred
        self.suppressor = suppressor

    def fix(self):
        return None


class BackgroundError(Error):
    short_name = "Bkg"

    def __init__(self, pred):
        self.pred = pred

    def fix(self):
        return None


class OtherError(Error):
    short_name = "Both"

    def __init__(self, pred):
        self.pred = pred

    def fix(self):
        return None


class MissedError(Error):
    short_name = "Miss"

    def __init__(self, gt):
        self.gt = gt

    def fix(self):
        return self.gt["class"], -1


class FalsePositiveError:
    short_name = "FalsePos"

    @staticmethod
    def fix(score, correct, info):
        if correct:
            return 1, True, info
        else:
            return 0, False, info


class FalseNegativeError:
    short_name = "FalseNeg"


# ------------------------------------------------------------------------------ tidecv/quantify.py
class TIDEExample:
    def __init__(self, preds, gt, pos_thresh, mode, max_dets, run_errors=True):
        self.preds = preds
        self.gt = [x for x in gt if not x["ignore"]]
        self.ignore_regions = [x for x in gt if x["ignore"]]
        self.mode = mode
        self.pos_thresh = pos_thresh
        self.max_dets = max_dets
        self.run_errors = run_errors
        self._run()

    def _run(self):
        preds = self.preds
        gt = self.gt
        ignore = self.ignore_regions
        det_type = "bbox" if self.mode == TIDE.BOX else "mask"
        max_dets = self.max_dets
        if len(preds) == 0:
            raise RuntimeError("Example has no predictions!")
        preds.sort(key=lambda pred: -pred["score"])
        preds = preds[:max_dets]
        self.preds = preds
        detections = [x[det_type] for x in preds]
        self.gt_iou = mask_utils.iou(detections, [x[det_type] for x in gt], [False] * len(gt))
        for idx, pred in enumerate(preds):
            pred["used"] = False
            pred["_idx"] = idx
            pred["iou"] = 0
        for idx, truth in enumerate(gt):
            truth["used"] = False
            truth["usable"] = False
            truth["_idx"] = idx
        pred_cls = np.array([x["class"] for x in preds])
        gt_cls = np.array([x["class"] for x in gt])
        if len(gt) > 0:
            self.gt_cls_matching = pred_cls[:, None] == gt_cls[None, :]
            self.gt_cls_iou = self.gt_iou * self.gt_cls_matching
            iou_buffer = self.gt_cls_iou.copy()
            for pred_idx, pred_elem in enumerate(preds):
                gt_idx = np.argmax(iou_buffer[pred_idx, :])
                iou = iou_buffer[pred_idx, gt_idx]
                pred_elem["iou"] = np.max(self.gt_cls_iou[pred_idx, :])
                if iou >= self.pos_thresh:
                    gt_elem = gt[gt_idx]
                    pred_elem["used"] = True
                    gt_elem["used"] = True
                    pred_elem["matched_with"] = gt_elem["_id"]
                    gt_elem["matched_with"] = pred_elem["_id"]
                    iou_buffer[:, gt_idx] = 0
        if len(ignore) > 0:
            for ignore_region in ignore:
                if ignore_region["mask"] is None and ignore_region["bbox"] is None:
                    ignore_iou = [1] * len(preds)
                else:
                    if ignore_region[det_type] is None:
                        continue
                    ignore_iou = mask_utils.iou(detections, [ignore_region[det_type]], [True])
                for pred_idx, pred_elem in enumerate(preds):
                    if not pred_elem["used"] and (ignore_iou[pred_idx] > self.pos_thresh) \
                            and (ignore_region["class"] == pred_elem["class"] or ignore_region["class"] == -1):
                        pred_elem["used"] = None
        if len(gt) == 0:
            return
        if self.run_errors:
            self.gt_used = np.array([x["used"] == True for x in gt])[None, :]
            self.gt_unused = ~self.gt_used
            self.gt_unused_iou = self.gt_unused * self.gt_iou
            self.gt_unused_cls = self.gt_unused_iou * self.gt_cls_matching
            self.gt_unused_noncls = self.gt_unused_iou * ~self.gt_cls_matching
            self.gt_noncls_iou = self.gt_iou * ~self.gt_cls_matching
            self.gt_used_iou = self.gt_used * self.gt_iou
            self.gt_used_cls = self.gt_used_iou * self.gt_cls_matching


class TIDERun:
    _temp_vars = ["best_score", "best_id", "used", "matched_with", "_idx", "usable"]

    def __init__(self, gt, preds, pos_thresh, bg_thresh, mode, max_dets, run_errors=True):
        self.gt = gt
        self.preds = preds
        self.errors = []
        self.error_dict = {_type: [] for _type in TIDE._error_types}
        self.ap_data = ClassedAPDataObject()
        self.qualifiers = {}
        self.false_negatives = {_id: [] for _id in self.gt.classes}
        self.pos_thresh = pos_thresh
        self.bg_thresh = bg_thresh
        self.mode = mode
        self.max_dets = max_dets
        self.run_errors = run_errors
        self._run()

    def _run(self):
        for image in self.gt.images:
            x = self.preds.get(image)
            y = self.gt.get(image)
            if not self.run_errors:
                ignored_classes = self.gt._get_ignored_classes(image)
                x = [pred for pred in x if pred["class"] not in ignored_classes]
            self._eval_image(x, y)
        for error in self.errors:
            error.original = nonepack(error.unfix())
            error.fixed = nonepack(error.fix())
            error.disabled = False
        self.ap = self.ap_data.get_mAP()
        self._clear()

    def _clear(self):
        for gt in self.gt.annotations:
            for var in self._temp_vars:
                if var in gt:
                    del gt[var]

    def _add_error(self, error):
        self.errors.append(error)
        self.error_dict[type(error)].append(error)

    def _eval_image(self, preds, gt):
        for truth in gt:
            if not truth["ignore"]:
                self.ap_data.add_gt_positives(truth["class"], 1)
        if len(preds) == 0:
            for truth in gt:
                if not truth["ignore"]:
                    self.ap_data.push_false_negative(truth["class"], truth["_id"])
                    if self.run_errors:
                        self._add_error(MissedError(truth))
                        self.false_negatives[truth["class"]].append(truth)
            return
        ex = TIDEExample(preds, gt, self.pos_thresh, self.mode, self.max_dets, self.run_errors)
        preds = ex.preds
        for pred_idx, pred in enumerate(preds):
            pred["info"] = {"iou": pred["iou"], "used": pred["used"]}
            if pred["used"]:
                pred["info"]["matched_with"] = pred["matched_with"]
            if pred["used"] is not None:
                self.ap_data.push(pred["class"], pred["_id"], pred["score"], pred["used"], pred["info"])
            if self.run_errors and (pred["used"] == False or pred["used"] == None):
                if len(ex.gt) == 0:
                    self._add_error(BackgroundError(pred))
                    continue
                idx = ex.gt_cls_iou[pred_idx, :].argmax()
                if self.bg_thresh <= ex.gt_cls_iou[pred_idx, idx] <= self.pos_thresh:
                    self._add_error(BoxError(pred, ex.gt[idx], ex))
                    continue
                idx = ex.gt_noncls_iou[pred_idx, :].argmax()
                if ex.gt_noncls_iou[pred_idx, idx] >= self.pos_thresh:
                    self._add_error(ClassError(pred, ex.gt[idx], ex))
                    continue
                idx = ex.gt_used_cls[pred_idx, :].argmax()
                if ex.gt_used_cls[pred_idx, idx] >= self.pos_thresh:
                    suppressor = self.preds.annotations[ex.gt[idx]["matched_with"]]
                    self._add_error(DuplicateError(pred, suppressor))
                    continue
                idx = ex.gt_iou[pred_idx, :].argmax()
                if ex.gt_iou[pred_idx, idx] <= self.bg_thresh:
                    self._add_error(BackgroundError(pred))
                    continue
                self._add_error(OtherError(pred))
        for truth in gt:
            if not truth["ignore"] and not truth["used"]:
                self.ap_data.push_false_negative(truth["class"], truth["_id"])
                if self.run_errors:
                    self.false_negatives[truth["class"]].append(truth)
                    if not truth["usable"]:
                        self._add_error(MissedError(truth))

    def fix_errors(self, condition=lambda x: False, transform=None, false_neg_dict=None, ap_data=None,
                   disable_errors=False):
        if ap_data is None:
            ap_data = self.ap_data
        gt_pos = ap_data.get_gt_positives()
        new_ap_data = ClassedAPDataObject()
        for error in self.errors:
            if error.disabled:
                continue
            _id = error.get_id()
            _cls, data_point = error.original
            if condition(error):
                _cls, data_point = error.fixed
                if disable_errors:
                    error.disabled = True
                if isinstance(data_point, int):
                    gt_pos[_cls] += data_point
                    data_point = None
            if data_point is not None:
                if transform is not None:
                    data_point = transform(*data_point)
                new_ap_data.push(_cls, _id, *data_point)
        for k in gt_pos.keys():
            for _id, (score, correct, info) in ap_data.objs[k].data_points.items():
                if correct:
                    if transform is not None:
                        score, correct, info = transform(score, correct, info)
                    new_ap_data.push(k, _id, score, correct, info)
        for k, v in gt_pos.items():
            if false_neg_dict is not None and k in false_neg_dict:
                v -= len(false_neg_dict[k])
            new_ap_data.add_gt_positives(k, v)
        return new_ap_data

    def fix_main_errors(self, progressive=False, error_types=None):
        """(``qual`` left out: tidecv's qualifiers are not used.)"""
        ap_data = self.ap_data
        last_ap = self.ap
        if error_types is None:
            error_types = TIDE._error_types
        errors = {}
        for error in error_types:
            _ap_data = self.fix_errors(lambda err, error=error: isinstance(err, error), ap_data=ap_data, disable_errors=progressive)
            new_ap = _ap_data.get_mAP()
            errors[error] = max(new_ap - last_ap, 0)
            if progressive:
                last_ap = new_ap
                ap_data = _ap_data
        if progressive:
            for error in self.errors:
                error.disabled = False
        return errors

    def fix_special_errors(self):
        return {
            FalsePositiveError: self.fix_errors(transform=FalsePositiveError.fix).get_mAP() - self.ap,
            FalseNegativeError: self.fix_errors(false_neg_dict=self.false_negatives).get_mAP() - self.ap}


class TIDE:
    _error_types = [ClassError, BoxError, OtherError, DuplicateError, BackgroundError, MissedError]
    _special_error_types = [FalsePositiveError, FalseNegativeError]
    BOX = "bbox"
    MASK = "mask"

    def __init__(self, pos_threshold=0.5, background_threshold=0.1, mode=BOX):
        self.pos_thresh = pos_threshold
        self.bg_thresh = background_threshold
        self.mode = mode
        self.runs = {}

    def evaluate(self, gt, preds, pos_threshold=None, background_threshold=None, mode=None, name=None, use_for_errors=True):
        pos_thresh = self.pos_thresh if pos_threshold is None else pos_threshold
        bg_thresh = self.bg_thresh if background_threshold is None else background_threshold
        mode = self.mode if mode is None else mode
        name = preds.name if name is None else name
        run = TIDERun(gt, preds, pos_thresh, bg_thresh, mode, gt.max_dets, use_for_errors)
        if use_for_errors:
            self.runs[name] = run
        return run

    def get_main_errors(self):
        return {name: {error.short_name: value for error, value in run.fix_main_errors().items()}
                for name, run in self.runs.items()}

    def get_special_errors(self):
        return {name: {error.short_name: value for error, value in run.fix_special_errors().items()}
                for name, run in self.runs.items()}
