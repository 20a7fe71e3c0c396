"""The HTTP edge of the job service: validate, stream uploads to storage, enqueue, report. No model here."""
