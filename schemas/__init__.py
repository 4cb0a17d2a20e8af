"""Pure shapes shared by every part of Sluice: settings, job and result models, errors."""
