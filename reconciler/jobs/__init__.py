"""Scheduled jobs per environment (issue 11): backups to restic, restore drills, copies between environments.

``model`` holds the configuration; ``runner`` runs one job; ``schedule`` fires them on cron expressions.
"""
