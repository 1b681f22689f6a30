from qtasks_mp.contrib.django import autodiscover_tasks
from qtasks_mp import QueueTasks

app = QueueTasks()
autodiscover_tasks(app)
