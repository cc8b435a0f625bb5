"""Threats to the bit rate: corruptions (unintentional) and attacks (intentional)."""

from entroguard.threats.threat import CLEAN, Threat, corruption_threat, parse_threat_name

__all__ = ["CLEAN", "Threat", "corruption_threat", "parse_threat_name"]
