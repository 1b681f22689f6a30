# QTasks docs/en/examples/index.md, block 2, from a client process.
from print_app import print_text

print(print_text.add_task("Hello, world!", timeout=50).returning)  # task_name = "print_text"
try:
    print_text.add_task(task_name="echo_text")  # task_name = "echo_text"
except KeyError as e:  # QTasks accepts it; its worker then fails: no task "echo_text"
    print("refused:", type(e).__name__)
