import ipaddress

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Actor
from security import services
from security.models import IpBlock
from security.selectors import active_blocks


class Command(BaseCommand):
    help = "Lift the blocks covering an address or network: the way back in for an admin who blocked themselves out."

    def add_arguments(self, parser):
        parser.add_argument("network", help="an address (203.0.113.7) or a CIDR network (203.0.113.0/24)")

    def handle(self, network, **options):
        try:
            wanted = IpBlock.normalise(network)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        blocks = [block for block in active_blocks() if _overlaps(block.network, wanted)]
        if not blocks:
            raise CommandError(f"No active block covers {wanted}.")
        for block in blocks:
            services.ip_unblock(actor=Actor.system("unblock_ip"), block=block)
            self.stdout.write(self.style.SUCCESS(f"Unblocked {block.network} ({block.reason})."))


def _overlaps(a, b):
    a, b = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return a.version == b.version and a.overlaps(b)
