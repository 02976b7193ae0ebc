"""dnastream.pipelines"""
