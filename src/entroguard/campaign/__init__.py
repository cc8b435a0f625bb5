"""Campaigns: a YAML grid of models x threats x strengths x defences, measured into SQLite."""

from entroguard.campaign.config import CampaignConfig, ConfigError, load_config
from entroguard.campaign.runner import run_campaign

__all__ = ["CampaignConfig", "ConfigError", "load_config", "run_campaign"]
