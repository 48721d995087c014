"""The contracts every part speaks (layer 1 in ARCHITECTURE.md): the MQTT topic tree and its
versioned payload models (:mod:`contracts.mqtt`). The register maps and the serial-line rules are
the other contracts; they describe the physical world and live in ``hardware/``.

Nothing here imports a part (``gateway``, ``fleet``, ``provisioning``) or the CLI.
"""
