"""benchmarks/search_quality.py: an exported answer that trains exactly a published row's recipe shares that row's
runs (not trained twice, not a second row of other numbers for the same training); any real difference keeps
its own runs."""
import importlib.util
import os.path as osp
import sys

from .demo_utils import ROOT


def _search_quality():
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    spec = importlib.util.spec_from_file_location('search_quality', osp.join(ROOT, 'benchmarks', 'search_quality.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _variant(tmp_path, name, extra):
    path = tmp_path / name
    path.write_text(f"_base_ = ['{ROOT}/configs/distillers/fgd/fgd_demo_faster_rcnn.py']\n{extra}\n")
    return str(path)


def test_an_export_of_a_published_recipe_shares_its_rows_and_a_changed_one_does_not(tmp_path):
    sq = _search_quality()
    rows = [('student + pkd', 'configs/distillers/pkd/pkd_demo_faster_rcnn.py', True, 'student + pkd'),
            ('student + fgd', 'configs/distillers/fgd/fgd_demo_faster_rcnn.py', True, 'student + fgd')]
    # what an export adds (this project's imports, a DDP flag, another path to the teacher) trains the same
    same = _variant(tmp_path, 'same.py', "custom_imports = dict(imports=['distill_core'], allow_failed_imports=False)\n"
                                         "find_unused_parameters = True\n"
                                         "model = dict(teacher=dict(checkpoint='elsewhere/final.pth'))")
    assert sq.shared_slug(same, rows) == 'student + fgd'
    # a loss weight, the inheritance or the schedule is another training
    weight = ("model = dict(distill_losses=[dict(name='fgd', levels=[0, 1, 2, 3], loss=dict(type='FGDLoss', "
              "student_channels=64, teacher_channels=64, temp=0.5, alpha_fgd=0.0004, beta_fgd=0.0001, "
              "gamma_fgd=0.0002, lambda_fgd=2e-06, split_terms=True))])")
    for name, extra in (('weight.py', weight),
                        ('inherit.py', 'model = dict(inherit_neck_head=False)'),
                        ('schedule.py', 'train_cfg = dict(max_iters=601)')):
        assert sq.shared_slug(_variant(tmp_path, name, extra), rows) is None, name
