# Does a longer proxy order the Faster R-CNN pair's distillers as the full schedule does? (issue 15: the search's
# answer led FGD by +0.052 under the 40-iteration proxy and trailed it by 0.012 AP at the full schedule.)
# Run after benchmarks/search_quality.py --config configs/search/quality_faster_rcnn.py, which exports the answer:
#   detkds-search baselines benchmarks/configs/proxy_check_faster_rcnn.py --study proxy120_faster_rcnn
# The members are the search's own bar (none, FGD, PKD, GKD) and its answer, on the proxy seeds 0-2, at 120
# iterations instead of 40 (everything else is the search's proxy). Fixed before any of its results.
_base_ = ['../../configs/search/quality_faster_rcnn.py']

proxy = dict(iterations=120, eval_interval=40)

baselines = dict(_delete_=True, none=None, fgd=None, pkd=None, gkd=None,
                 answer='runs/quality_faster_rcnn/quality_faster_rcnn_best.py')
