"""``MODEL.*`` defaults: meta-architecture, backbone, neck, heads, losses, weights."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_model_defaults"]


def add_model_defaults(cfg: CN) -> None:
    cfg.MODEL = CN()
    # Name in META_ARCH_REGISTRY: "FCOS", "RetinaNet", "YOLO" (one-stage) or "FasterRCNN"
    # (two-stage). Detectron2's "GeneralizedRCNN" is read as "FasterRCNN".
    cfg.MODEL.META_ARCHITECTURE = "FCOS"
    # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N" or "mps"
    cfg.MODEL.DEVICE = "auto"
    # Initial weights: a local file (detlab checkpoint, torchvision/timm state dict, Detectron2
    # .pth or .pkl) or a named source downloaded once into the library's cache:
    # torchvision://ResNet50_Weights.IMAGENET1K_V2, timm://resnet50.a1_in1k, https://...,
    # detectron2://ImageNetPretrained/MSRA/R-50.pkl. Applied only when not resuming (`--resume`
    # restores everything from OUTPUT_DIR/last_checkpoint instead).
    cfg.MODEL.WEIGHTS = ""
    # Per-channel normalisation of the mapper's float image (0..255 scale); length = channels.
    cfg.MODEL.PIXEL_MEAN = (103.53, 116.28, 123.675)
    # divides (pixel - PIXEL_MEAN); one value per input channel
    cfg.MODEL.PIXEL_STD = (57.375, 57.12, 58.395)
    # Pad the batch's height/width to a multiple of this; 0 = the backbone's largest stride.
    cfg.MODEL.SIZE_DIVISIBILITY = 0
    # Run convolutions in NHWC (channels-last) memory format, oneDNN's native layout on CPU
    # (the RoIAlign product reads it without a copy). Same results up to rounding; measured
    # train-step times are in docs/benchmarks.md.
    cfg.MODEL.CHANNELS_LAST = True

    cfg.MODEL.BACKBONE = CN()
    cfg.MODEL.BACKBONE.NAME = "resnet50"  # name in BACKBONE_REGISTRY
    cfg.MODEL.BACKBONE.IN_CHANNELS = 3  # 1 for single-channel SAR
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # 0 = train all; k = freeze stem + first k-1 stages
    # "BN" | "SyncBN" (statistics over DDP GPUs) | "FrozenBN" | "GN"; use "BN" from scratch.
    # ResNets and timm read it; CSPDarknet always uses BN.
    cfg.MODEL.BACKBONE.NORM = "FrozenBN"

    # ResNet options. Names: resnet18/34/50/101/152 (torchvision constructors, weights=None)
    # and tiny_resnet (torchvision BasicBlocks, light CPU option).
    cfg.MODEL.RESNETS = CN()
    # Stage widths are 64·WIDTH_MULT·(1, 2, 4, 8) (× 4 for bottleneck depths). With 1.0 the
    # named depths are torchvision's networks unchanged (their checkpoints load).
    cfg.MODEL.RESNETS.WIDTH_MULT = 1.0
    # Blocks in stages 1..4 of tiny_resnet (the named depths have their own counts).
    cfg.MODEL.RESNETS.BLOCKS_PER_STAGE = (1, 1, 1, 1)
    # Bottleneck blocks that downsample do it in the first 1x1 conv (MSRA/Caffe2 layout, the
    # default of Detectron2 configs and what its R-50.pkl weights expect) instead of the 3x3
    # conv (torchvision's layout, False).
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False

    # MODEL.BACKBONE.NAME "CSPDarknet": the YOLOv8 backbone layout. Scales (DEPTH_MULT,
    # WIDTH_MULT, MAX_CHANNELS): n (0.33, 0.25, 1024), s (0.33, 0.50, 1024), m (0.67, 0.75, 768).
    cfg.MODEL.CSP = CN()
    cfg.MODEL.CSP.DEPTH_MULT = 0.33  # multiplies the C2f block counts STAGE_DEPTHS
    cfg.MODEL.CSP.WIDTH_MULT = 0.25  # multiplies the widths 64, 128, 256, 512, 1024
    cfg.MODEL.CSP.MAX_CHANNELS = 1024  # cap on a base width before WIDTH_MULT
    cfg.MODEL.CSP.STAGE_DEPTHS = (3, 6, 6, 3)  # base C2f blocks in stages 1..4

    # MODEL.BACKBONE.NAME "timm": any timm model with features_only (needs the timm extra).
    cfg.MODEL.TIMM = CN()
    cfg.MODEL.TIMM.MODEL_NAME = "resnet18"

    # Recurrent memory between backbone and neck (event streams): one cell per level, its
    # state carried across the windows of a stream, reset where a recording starts.
    cfg.MODEL.TEMPORAL = CN()
    # Name in TEMPORAL_REGISTRY: "ConvLSTM" | "ConvGRU"; "" or "none" = no memory.
    cfg.MODEL.TEMPORAL.NAME = ""
    # Backbone levels with a cell, e.g. ("res3", "res4", "res5"); () = those the neck reads.
    cfg.MODEL.TEMPORAL.IN_FEATURES = ()
    cfg.MODEL.TEMPORAL.KERNEL_SIZE = 3  # spatial kernel of the cells' convolutions
    # Truncated backpropagation through time: the state is detached every K windows of a
    # clip (0 = only between batches, i.e. through whole clips of DATALOADER.SEQUENCE.LENGTH).
    cfg.MODEL.TEMPORAL.DETACH_EVERY = 0

    cfg.MODEL.NECK = CN()
    cfg.MODEL.NECK.NAME = "FPN"  # name in NECK_REGISTRY: "FPN" | "PAFPN" | "PAN"
    cfg.MODEL.FPN = CN()
    # Backbone stages fed to the FPN, 1..4 = strides 4/8/16/32. 3-scale: [2, 3, 4];
    # 4-scale: [1, 2, 3, 4].
    cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
    cfg.MODEL.FPN.OUT_CHANNELS = 256  # channels of every pyramid level
    # Extra levels: "none" | "P6" | "P6P7" (stride-2 convs on P5, FCOS) | "P6P7C5" (the same on
    # the coarsest backbone stage C5, RetinaNet as in Detectron2 and torchvision) | "P6pool"
    # (stride-2 subsampling of P5, the Faster R-CNN FPN's P6).
    cfg.MODEL.FPN.TOP_BLOCK = "P6P7"
    cfg.MODEL.FPN.NORM = ""  # "" | "GN" | "BN" after each FPN conv

    # MODEL.NECK.NAME "PAN" (YOLO path aggregation, concatenation + C2f blocks) reads
    # MODEL.FPN.IN_STAGES and TOP_BLOCK and these keys.
    cfg.MODEL.PAN = CN()
    # 0 = each level keeps its backbone stage's width (YOLOv8); > 0 = this width everywhere.
    cfg.MODEL.PAN.OUT_CHANNELS = 0
    cfg.MODEL.PAN.NUM_BLOCKS = 1  # bottlenecks per fusing C2f block (n: 1, s: 1, m: 2)

    # YOLO-family head (MODEL.META_ARCHITECTURE "YOLO"): anchor-free, decoupled branches.
    cfg.MODEL.YOLO = CN()
    cfg.MODEL.YOLO.HEAD_NAME = "YOLOHead"  # name in DENSE_HEAD_REGISTRY
    cfg.MODEL.YOLO.NUM_CLASSES = 80
    cfg.MODEL.YOLO.IN_FEATURES = ()  # neck levels used, e.g. ("p3", "p4", "p5"); () = all
    # DFL bins per box side (distances up to REG_MAX-1 strides); 1 = no DFL (softplus).
    cfg.MODEL.YOLO.REG_MAX = 16
    # name in ASSIGNER_REGISTRY: "TAL" (task-aligned, YOLOv8) | "SimOTA" (YOLOX)
    cfg.MODEL.YOLO.ASSIGNER = "TAL"
    cfg.MODEL.YOLO.IOU_LOSS = "ciou"  # "ciou" | "giou" | "diou" (torchvision.ops)
    cfg.MODEL.YOLO.LOSS_WEIGHTS = (7.5, 0.5, 1.5)  # box, classification, DFL
    cfg.MODEL.YOLO.TAL = CN()
    cfg.MODEL.YOLO.TAL.TOPK = 10  # positives per box (best alignment among anchors inside it)
    cfg.MODEL.YOLO.TAL.ALPHA = 0.5  # exponent of the class score in the alignment metric
    cfg.MODEL.YOLO.TAL.BETA = 6.0  # exponent of the IoU in the alignment metric
    cfg.MODEL.YOLO.SIMOTA = CN()
    cfg.MODEL.YOLO.SIMOTA.CENTER_RADIUS = 2.5  # candidate region around box centres, strides
    cfg.MODEL.YOLO.SIMOTA.TOPK_IOU = 10  # IoUs summed for each box's dynamic positive count
    cfg.MODEL.YOLO.SIMOTA.IOU_WEIGHT = 3.0  # weight of -log(IoU) in the matching cost
    cfg.MODEL.YOLO.SCORE_THRESH_TEST = 0.001  # class probability threshold at inference
    cfg.MODEL.YOLO.TOPK_CANDIDATES_TEST = 1000  # (anchor, class) pairs kept before NMS
    cfg.MODEL.YOLO.NMS_THRESH_TEST = 0.7  # class-wise NMS IoU

    # FCOS head (MODEL.META_ARCHITECTURE "FCOS").
    cfg.MODEL.FCOS = CN()
    cfg.MODEL.FCOS.HEAD_NAME = "FCOSHead"  # name in DENSE_HEAD_REGISTRY
    cfg.MODEL.FCOS.NUM_CLASSES = 80
    cfg.MODEL.FCOS.IN_FEATURES = ()  # neck levels used, e.g. ("p3", "p4", "p5"); () = all
    cfg.MODEL.FCOS.NUM_CONVS = 4  # conv layers per tower (classification and box)
    cfg.MODEL.FCOS.NORM = "GN"  # tower norm: "GN" | "BN" | ""
    cfg.MODEL.FCOS.PRIOR_PROB = 0.01  # initial foreground probability of the class logits
    cfg.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    cfg.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Positives lie within this many strides of a box centre (0 = anywhere in the box).
    cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Per-level (low, high] ranges of the largest regression distance, in input pixels;
    # () = (4·stride, 8·stride], open at both ends (the paper's 64/128/256/512 for P3–P7).
    cfg.MODEL.FCOS.SIZES_OF_INTEREST = ()
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.05  # on sqrt(class prob · centerness)
    cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000  # per level, before NMS
    cfg.MODEL.FCOS.NMS_THRESH_TEST = 0.6  # class-wise NMS IoU

    # RetinaNet (MODEL.META_ARCHITECTURE "RetinaNet"), Detectron2's keys and defaults. Anchors
    # come from MODEL.ANCHOR_GENERATOR; its empty SIZES mean 3 octave scales per level,
    # 4·stride·2^(k/3) for k = 0, 1, 2 (32, 40.3, 50.8 on P3).
    cfg.MODEL.RETINANET = CN()
    cfg.MODEL.RETINANET.HEAD_NAME = "RetinaNetHead"  # name in DENSE_HEAD_REGISTRY
    cfg.MODEL.RETINANET.NUM_CLASSES = 80
    cfg.MODEL.RETINANET.IN_FEATURES = ()  # neck levels used, e.g. ("p3", ..., "p7"); () = all
    cfg.MODEL.RETINANET.NUM_CONVS = 4  # conv layers per subnet (classification and box)
    cfg.MODEL.RETINANET.NORM = ""  # subnet norm: "" | "GN" | "BN"
    # Anchors with IoU below the first threshold are background, at/above the last foreground;
    # IOU_LABELS gives the label of each interval (0 background, -1 ignored, 1 foreground).
    # Each object's best anchors are foreground too.
    cfg.MODEL.RETINANET.IOU_THRESHOLDS = (0.4, 0.5)
    cfg.MODEL.RETINANET.IOU_LABELS = (0, -1, 1)
    cfg.MODEL.RETINANET.PRIOR_PROB = 0.01  # initial foreground probability of the class logits
    cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA = 0.25
    cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA = 2.0
    cfg.MODEL.RETINANET.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # (dx, dy, dw, dh) box coding
    # "smooth_l1" on the box deltas (SMOOTH_L1_LOSS_BETA; 0 = L1) or "giou" on decoded boxes.
    cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE = "smooth_l1"
    cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.1
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.05  # on the class probability
    cfg.MODEL.RETINANET.TOPK_CANDIDATES_TEST = 1000  # per level, before NMS
    cfg.MODEL.RETINANET.NMS_THRESH_TEST = 0.5  # class-wise NMS IoU

    # Faster R-CNN (MODEL.META_ARCHITECTURE "FasterRCNN"), Detectron2 key names.
    cfg.MODEL.PROPOSAL_GENERATOR = CN()
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"  # name in PROPOSAL_GENERATOR_REGISTRY

    cfg.MODEL.ANCHOR_GENERATOR = CN()
    # Anchor sizes (sqrt of area, input pixels) per level of the RPN or RetinaNet, e.g.
    # ((32,), (64,), (128,), (256,), (512,)); one list is used on every level; () = the
    # detector's default (RPN: 8 × each level's stride; RetinaNet: see MODEL.RETINANET).
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = ()
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = ((0.5, 1.0, 2.0),)  # height / width
    cfg.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0  # anchor centre offset, in strides

    cfg.MODEL.RPN = CN()
    cfg.MODEL.RPN.IN_FEATURES = ()  # neck levels, e.g. ("p2", ..., "p6"); () = all
    cfg.MODEL.RPN.IOU_THRESHOLDS = (0.3, 0.7)  # background below, foreground at/above
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # sampled anchors per image
    cfg.MODEL.RPN.POSITIVE_FRACTION = 0.5  # largest share of positives among sampled anchors
    # weights (dx, dy, dw, dh) of the anchor box coding
    cfg.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
    cfg.MODEL.RPN.SMOOTH_L1_BETA = 0.0  # 0 = L1
    cfg.MODEL.RPN.LOSS_WEIGHT = 1.0  # multiplies both RPN losses
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000  # per level
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000  # per level
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000  # per image
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 1000  # per image
    cfg.MODEL.RPN.NMS_THRESH = 0.7  # IoU threshold of the NMS over proposals
    cfg.MODEL.RPN.MIN_SIZE = 0.0  # proposals smaller than this (input px) are dropped
    cfg.MODEL.RPN.SIZE_AWARE_LOSS = False  # apply MODEL.SIZE_AWARE_LOSS weights in the RPN too

    cfg.MODEL.ROI_HEADS = CN()
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"  # name in ROI_HEADS_REGISTRY
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80  # foreground classes (background excluded)
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ()  # () = neck levels with stride <= 32
    cfg.MODEL.ROI_HEADS.IOU_THRESHOLDS = (0.5,)  # foreground at/above
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # sampled RoIs per image
    cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # largest share of foreground among sampled RoIs
    # add the ground-truth boxes to the proposals in training
    cfg.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True
    # detections below this score are dropped at inference
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5  # IoU threshold of the class-wise NMS at inference

    cfg.MODEL.ROI_BOX_HEAD = CN()
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # RoIAlign output size (cells per side)
    cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # RoIAlign samples per bin; 0 = adaptive
    # "ROIAlign": torchvision's MultiScaleRoIAlign; "ROIAlignV2": half-pixel aligned RoIAlign
    # with Detectron2's level rule (Detectron2's default; its checkpoints expect it).
    cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlign"
    # RoIAlign implementation: "auto" = one sparse bilinear-weight product over channels-last
    # features on CPU (10-14x less CPU time than torchvision's CPU kernel forward + backward
    # in benchmarks/roi_align_speed.py; same values up to float rounding), torchvision's
    # kernel on other devices; "torchvision" = torchvision's roi_align everywhere.
    cfg.MODEL.ROI_BOX_HEAD.POOLER_KERNEL = "auto"
    cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 0  # conv layers before the FC layers of the box head
    cfg.MODEL.ROI_BOX_HEAD.CONV_DIM = 256  # channels of those conv layers
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2  # fully connected layers of the box head
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # width of those layers
    cfg.MODEL.ROI_BOX_HEAD.NORM = ""  # norm of the box-head convs: "" / "BN" / "GN"
    # weights (dx, dy, dw, dh) of the proposal box coding
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    # smooth-L1 transition point of the box loss (0 = L1)
    cfg.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False  # one box regression for all classes

    # Size-aware weighted loss: each positive target's classification and regression terms
    # are multiplied by w(area), area in the ORIGINAL image's pixels² (boxes are rescaled
    # from the network input by (height/h_in)·(width/w_in)), the pixels COCO buckets use.
    # Used by the FCOS, RetinaNet and YOLO heads and the ROI box head, and by the RPN when
    # MODEL.RPN.SIZE_AWARE_LOSS is true. TYPE: exponential | linear | step.
    cfg.MODEL.SIZE_AWARE_LOSS = CN()
    cfg.MODEL.SIZE_AWARE_LOSS.ENABLED = False
    cfg.MODEL.SIZE_AWARE_LOSS.TYPE = "exponential"  # name in SIZE_WEIGHT registry
    cfg.MODEL.SIZE_AWARE_LOSS.MAX_WEIGHT = 2.5
    cfg.MODEL.SIZE_AWARE_LOSS.SMALL_AREA = 1024.0  # px² in the original image (32²)
    cfg.MODEL.SIZE_AWARE_LOSS.MEDIUM_AREA = 9216.0  # px² in the original image (96²)
    # "num_pos": keep each loss's usual normaliser (FCOS: positive count; RPN/ROI: sampled
    # count), so weights raise small objects' share; "weight_sum": the same normaliser with
    # each counted target replaced by its weight (negatives weigh 1): weights redistribute.
    cfg.MODEL.SIZE_AWARE_LOSS.NORMALIZE = "num_pos"
