# Cascade R-CNN teacher: the demo Cascade R-CNN detector (_base_/cascade_rcnn.py, ResNet-18 base 64 + FPN 64, the
# Faster R-CNN demo's RPN, a 3-stage cascade RoI head) on the 1200-iteration schedule of the shapes data. Its
# student is the demo Faster R-CNN student (configs/search/demo_cascade_faster_rcnn.py): DetKDS's heterogeneous
# Cascade -> Faster R-CNN pair in miniature.
_base_ = ['./_base_/shapes_detection.py', './_base_/cascade_rcnn.py']
