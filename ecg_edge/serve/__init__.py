"""Online inference on Ray Serve: recordings (`POST /v1/ecg`) and tensors (KServe v2) over HTTP.

`bodies` reads request bodies as `infer` reads files, `kserve` speaks the v2 tensor protocol, `app` is
the Ray Serve deployment, `proxy` sets up what routes requests to it (Serve's proxy or HAProxy),
`server` starts and stops it. Only `server` and `app` import Ray (`proxy` asks Ray's HAProxy package
where its program is).
"""
