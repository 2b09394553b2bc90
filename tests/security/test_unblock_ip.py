"""`manage.py unblock_ip`: the way back in for an admin whose own address is blocked."""

import pytest
from django.core.management import CommandError, call_command

from accounts.audit import Actor
from security import services
from security.models import IpBlock


def test_lifts_every_block_covering_the_address(db):
    services.ip_block(actor=Actor.system("test"), network="10.0.0.0/8", reason="r")
    services.ip_block(actor=Actor.system("test"), network="10.1.2.3", reason="r")
    services.ip_block(actor=Actor.system("test"), network="192.0.2.1", reason="r")

    call_command("unblock_ip", "10.1.2.3")

    assert list(IpBlock.objects.values_list("network", flat=True)) == ["192.0.2.1"]


def test_says_when_nothing_blocks_the_address(db):
    with pytest.raises(CommandError, match="No active block"):
        call_command("unblock_ip", "10.1.2.3")
