from ._trainingplan import MMDTrainingPlan

__all__ = ["MMDTrainingPlan"]
