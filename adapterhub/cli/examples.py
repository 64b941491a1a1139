"""One example (or a few) per command, shown at the end of its `--help` (LazyGroup.get_command adds them)."""

from __future__ import annotations

EXAMPLES: dict[str, list[str]] = {
    "add": ["adapterhub add ./sst2-lora --name team/sentiment --task sentiment --metric sst2/accuracy=0.91 --alias prod"],
    "ls": ["adapterhub ls --all", "adapterhub ls -q | xargs -n1 adapterhub show"],
    "show": ["adapterhub show team/sentiment@prod"],
    "search": [
        "adapterhub search --task sentiment --base ./llama --min sst2/accuracy=0.9 --sort sst2/accuracy",
        "adapterhub search review -q",
    ],
    "score": ["adapterhub score team/sentiment@2 --metric sst2/accuracy=0.93"],
    "rm": ["adapterhub rm team/sentiment@1", "adapterhub rm team/sentiment --yes   # every version"],
    "tag": ["adapterhub tag team/sentiment@2 prod"],
    "untag": ["adapterhub untag team/sentiment prod"],
    "export": ["adapterhub export team/sentiment@prod ./sentiment-peft"],
    "gc": ["adapterhub gc --dry-run", "adapterhub gc --grace 0"],
    "bases": ["adapterhub bases --json"],
    "fsck": ["adapterhub fsck --quick"],
    "db": ["adapterhub db upgrade", "adapterhub db current"],
    "token": ["adapterhub token create --namespace team --scope write --expires 30d", "adapterhub token list"],
    "hash": ["adapterhub hash ./llama --json"],
    "demo": ["adapterhub demo --workdir /tmp/adapterhub-demo"],
    "validate": ["adapterhub validate team/sentiment@prod --base ./llama"],
    "run": [
        "adapterhub run --base ./llama --adapter team/qa@1 --prompt 'The capital of France is'",
        "adapterhub run --base ./minilm --adapter team/sentiment:0.5 --sentence 'great movie'",
    ],
    "merge": ["adapterhub merge --base ./llama --adapter team/qa@1:0.8 --out ./llama-qa --dtype bfloat16"],
    "compose": ["adapterhub compose team/a@1 team/b@1:0.5 --method ties --density 0.5 --name team/ab"],
    "extract": ["adapterhub extract --base ./llama --finetuned ./llama-ft --rank 16 --name team/ft-lora"],
    "serve": [
        "adapterhub serve --port 8000 --token me:secret",
        "HF_ENDPOINT=http://127.0.0.1:8000 huggingface-cli download team/sentiment",
        "AWS_ENDPOINT_URL=http://ceph:7480 adapterhub serve --database-url postgresql+psycopg://hub@db/hub --blobs s3://models/hub",
    ],
    "push": [
        "adapterhub push team/sentiment@2 --remote http://127.0.0.1:8000 --token secret",
        "adapterhub push ./merged --repo team/merged-model --remote http://127.0.0.1:8000",
    ],
    "pull": [
        "adapterhub pull team/sentiment --remote http://127.0.0.1:8000 --as mirror/sentiment",
        "adapterhub pull team/sentiment@prod --remote http://127.0.0.1:8000   # @2 is tag v2, @prod the alias tag",
    ],
    "deploy": [
        "adapterhub deploy ./Llama-3-8B --port 8080 --adapters team/sentiment@prod",
        "adapterhub deploy ./Llama-3-8B --remote http://hub:8000 --token $TOKEN --cache-bytes 1073741824 --api-key K",
    ],
    "tune": [
        "adapterhub tune --base ./smollm2 --data train.jsonl --eval heldout.jsonl --name team/dates --task dates --rank 8",
        "adapterhub tune --base ./smollm2 --data chat.jsonl --name team/chat --task chat --max-steps 200 --resume",
    ],
    "eval": [
        "adapterhub eval team/dates@latest --data heldout.jsonl --metric exact_match",
        "adapterhub eval team/a team/b --with-base --data heldout.jsonl --metric chrf --json",
    ],
    "import-gguf": ["adapterhub import-gguf", "adapterhub import-gguf model.gguf --out ./model --name my-model"],
}
