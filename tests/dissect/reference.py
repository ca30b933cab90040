"""Network dissection written out by brute force, in numpy, straight from the paper's definition.

Bau et al. (CVPR 2017): T_k = np.quantile(all activations of unit k, 1 - Q); M_k = bilinear
upsampling (align_corners=False) of the unit's map to the mask's size, > T_k; IoU(k, c) =
sum |M_k & L_c| / sum |M_k | L_c| over the images annotated in c's category; the label is the
concept of highest IoU.  Independent of the product's code: nothing is imported from it.
"""
import numpy as np
import torch


def bilinear(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PyTorch's ``interpolate(mode="bilinear", align_corners=False)`` of one 2-D map, in float64."""
    a = a.astype(np.float64)
    h, w = a.shape

    def taps(n_in, n_out):
        i0, i1, l1 = [], [], []
        for o in range(n_out):
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            j = int(np.floor(src))
            i0.append(j)
            i1.append(min(j + 1, n_in - 1))
            l1.append(src - j)
        return np.array(i0), np.array(i1), np.array(l1)

    y0, y1, ly = taps(h, out_h)
    x0, x1, lx = taps(w, out_w)
    top = a[y0][:, x0] * (1 - lx) + a[y0][:, x1] * lx
    bottom = a[y1][:, x0] * (1 - lx) + a[y1][:, x1] * lx
    return top * (1 - ly)[:, None] + bottom * ly[:, None]


def activations(model, x_batches, layer: str) -> np.ndarray:
    """N x C x H x W outputs of ``layer`` for the given input batches (one forward each)."""
    found = []
    module = dict(model.named_modules())[layer]
    h = module.register_forward_hook(lambda m, a, out: found.append(out.detach().numpy().copy()))
    try:
        with torch.no_grad():
            for x in x_batches:
                model(x)
    finally:
        h.remove()
    return np.concatenate(found)


def dissect_reference(acts: np.ndarray, images: list, names: list, categories: list, q: float) -> dict:
    """Every unit's (label, IoU, threshold) and the full IoU table.

    ``acts`` N x C x h x w; ``images`` N dicts {"maps": [label map ...], "scalars": [concept ...],
    "annotated": set of categories}; ``names`` concept id -> (name, category).
    """
    N, C = acts.shape[:2]
    thresholds = np.array([np.quantile(acts[:, k].ravel(), 1 - q) for k in range(C)])
    ids = sorted(names)
    inter = np.zeros((C, len(ids)))
    union = np.zeros((C, len(ids)))
    for n, im in enumerate(images):
        size = (im["maps"][0].shape if im["maps"] else im["size"])
        for k in range(C):
            m = bilinear(acts[n, k], *size) > thresholds[k]
            for j, cid in enumerate(ids):
                if names[cid][1] not in im["annotated"]:
                    continue
                lab = np.zeros(size, bool)
                for mp in im["maps"]:
                    lab |= mp == cid
                if cid in im["scalars"]:
                    lab[:] = True
                inter[k, j] += (m & lab).sum()
                union[k, j] += (m | lab).sum()
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    units = []
    for k in range(C):
        j = int(np.argmax(iou[k]))
        units.append((names[ids[j]][0] if iou[k, j] > 0 else None, float(iou[k, j]), thresholds[k]))
    return {"units": units, "iou": iou, "thresholds": thresholds, "ids": ids}
