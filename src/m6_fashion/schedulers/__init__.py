from .scheduling_smart import SMARTScheduler, SMARTSchedulerOutput
