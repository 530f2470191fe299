"""Residual networks: the block whose input is used twice, and ResNet-20 for CIFAR-10.

Derivation: derivations/18-residual.md (and derivations/01-chain-rule.md: gradients of a value used twice add).

A residual block computes y = relu(F(x) + S(x)): F is the block's own path (conv, BatchNorm, ReLU, conv,
BatchNorm) and S the shortcut (the identity, or option A where the shape changes).  x is used twice, so by
the chain rule its gradient is the sum of what comes back along each path (Q2), (C3):

    dL/dx = F.backward(g) + S.backward(g),   g = relu.backward(dL/dy)

which is all ``BasicBlock.backward`` does beyond calling its layers' backwards in reverse.  On the identity
path dL/dx receives g unchanged: however deep the net, the gradient has a path on which no weight matrix
multiplies it (the numbers are in the derivation).

BatchNorm, the join and ReLU do next to no arithmetic per value, so their cost is reading and writing the
activations; ``BatchNorm2d.relu_after(x, r)`` computes relu(bn(x) + r) in one pass and its backward in one
more, with the same arithmetic as the three layers (Q7).  The block is written with it: where torch's block
says ``F.relu(self.bn1(self.conv1(x)))``, this one says ``self.bn1.relu_after(self.conv1(x))``.

``resnet20()`` is He et al. 2016, section 4.2 (CIFAR-10): a 3x3 convolution with 16 channels, three stages of
three blocks with 16, 32 and 64 channels (the first block of stages 2 and 3 halves the image with stride 2),
global average pooling and a Linear(64, 10): 269,722 parameters.  Its ``state_dict`` keys are those of the
standard PyTorch CIFAR ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``), in the same order.
"""
from . import kernels, nn
from ._checks import float_array
from .nn import init

__all__ = ["BasicBlock", "ResNet", "ShortcutA", "resnet20"]


class ShortcutA(nn.Module):
    """He et al.'s option A: keep every second pixel (stride 2) and add ``pad`` zero channels on each side, so
    x (N, C, H, W) meets a block output of (N, C + 2*pad, ceil(H/2), ceil(W/2)) with no parameters  (Q3), (Q4).
    """

    def __init__(self, pad):
        super().__init__()
        self.pad = int(pad)
        self._x_shape = None  # dL/dx has the input's shape (Q4)

    def forward(self, input):
        x = float_array(input, "ShortcutA", ndim=4)
        self._x_shape = tuple(x.shape)
        return kernels.shortcut_a_forward(x, self.pad)  # (Q3)

    def backward(self, grad_output):
        x_shape = self._saved(self._x_shape)
        return kernels.shortcut_a_backward(grad_output, x_shape, self.pad)  # (Q4)

    def extra_repr(self):
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), two 3x3 convolutions without bias.

    ``stride=2`` (or a change of channels) makes the first convolution halve the image and the shortcut
    option A; otherwise the shortcut is the identity.
    """

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            if stride != 2 or planes != 2 * in_planes:
                raise ValueError(f"BasicBlock: option A pads channels and halves the image: expected stride 2 and "
                                 f"planes = 2 * in_planes, got in_planes={in_planes}, planes={planes}, "
                                 f"stride={stride}")
            if in_planes % 2:  # planes // 4 zero channels on each side would give in_planes + 2 * pad != planes
                raise ValueError(f"BasicBlock: option A pads in_planes / 2 zero channels on each side, so in_planes "
                                 f"must be even, got in_planes={in_planes}, planes={planes}")
            self.shortcut = ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, input):
        out = self.bn1.relu_after(self.conv1(input))  # relu(bn1(conv1(x))): BatchNorm and ReLU in one pass (Q7)
        out = self.conv2(out)
        # relu(bn2(out) + S(x)) in one pass: F(x) = bn2(conv2(...)) meets the shortcut, x used a second time (Q1)
        return self.bn2.relu_after(out, self.shortcut(input))

    def backward(self, grad_output):
        # ReLU's backward, then bn2's: g = dL/d(conv2's output), and g_sum = dL/d(F(x) + S(x)), which both
        # terms of the sum get (Q2)
        g, g_sum = self.bn2.backward_relu(grad_output)
        g_short = self.shortcut.backward(g_sum)  # along the shortcut: g_sum itself, or (Q4)
        g = self.conv2.backward(g)
        g = self.bn1.backward(g)  # ReLU's and bn1's backward (relu_after's)
        g = self.conv1.backward(g)  # along F
        return kernels.add(g, g_short)  # the fork: the two gradients of x add (Q2), (C3)


class ResNet(nn.Module):
    """conv1 -> bn1 -> relu -> layer1 -> layer2 -> layer3 -> global average pool -> fc (bn1 and the ReLU in one
    pass, ``BatchNorm2d.relu_after``).

    ``forward`` is a chain of child calls, so ``backward`` replays it in reverse (derivations/01); the
    residual arithmetic lives in ``BasicBlock.backward``.
    """

    def __init__(self, num_blocks=(3, 3, 3), num_classes=10, in_channels=3):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(64, num_blocks[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He et al.'s initialisation of the convolutions, as the PyTorch CIFAR ResNet
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight)

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, input):
        x = self.bn1.relu_after(self.conv1(input))  # relu(bn1(conv1(x))), one pass
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet20(num_classes=10, in_channels=3):
    """ResNet-20 for 3 x 32 x 32 images (He et al. 2016, section 4.2): 269,722 parameters."""
    return ResNet((3, 3, 3), num_classes=num_classes, in_channels=in_channels)
