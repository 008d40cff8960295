"""Tests of tfdeblur.export and the export CLI."""
